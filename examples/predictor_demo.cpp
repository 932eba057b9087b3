// predictor_demo: what a predictor host does with kvzch, end to end.
//
// One cache per embedding table, each with its own row width, is published;
// request threads then serve Zipf-distributed lookups on every table. Half
// way through, a new model version is published over a shifted id range:
// traffic moves to the new ids at once and the rows stream in over a couple
// of seconds, so the hit rate dips and recovers; evict_older_than then drops
// the rows the new version no longer has and compact() returns their memory.
//
// Every batch reaches the host's stats layer through global sinks, as in a
// predictor: an fb303-style registry (kvzch::SumStats, add_stat_value,
// exported as "<name>.sum.60") and a Prometheus registry
// (kvzch::PrometheusReadStats), served on /metrics with --metrics-port. The
// status line each second and the summary read those registries, and the
// demo exits non-zero unless they agree exactly with each cache's
// cumulative_read_stats().
#include "kvzch.hpp"

#if KVZCH_DEMO_HTTP
#include <httplib.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using SteadyClock = std::chrono::steady_clock;

struct TableSpec {
  std::string name;
  std::uint64_t rows = 0;
  std::uint32_t row_bytes = 0;
};

struct Config {
  std::vector<TableSpec> tables{{"user", 200000, 256}, {"item", 100000, 128}, {"ads", 50000, 64}};
  unsigned threads = 2;
  unsigned duration_s = 10;
  std::size_t batch = 512;
  double zipf = 1.05;
  double miss_ratio = 0.05;
  std::string library; // empty: the linked one
  int metrics_port = -1; // -1: no server; 0: any free port
  unsigned linger_s = 0;
};

void usage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: predictor_demo [options]\n"
      "  --table NAME:ROWS:BYTES  an embedding table (repeat for more); the default is\n"
      "                           user:200000:256 item:100000:128 ads:50000:64\n"
      "  --threads N              request threads (default 2)\n"
      "  --duration S             seconds of traffic (default 10); the republish starts at S/2,\n"
      "                           and the traffic's end waits for it on a slow machine\n"
      "  --batch N                ids per batch_get (default 512)\n"
      "  --zipf S                 Zipf exponent of id popularity (default 1.05)\n"
      "  --miss-ratio R           share of lookups for ids never published, 0..1 (default 0.05)\n"
      "  --library PATH           load this libkvzch with kvzch::Library::open instead of\n"
      "                           using the linked one\n"
      "  --metrics-port PORT      serve Prometheus /metrics on 127.0.0.1:PORT (0: a free port)\n"
      "  --linger S               after the summary, keep serving /metrics for S seconds\n"
      "                           (default 0)\n"
      "SIGINT or SIGTERM ends the traffic (the summary and its checks still run) or the\n"
      "linger. Exit status: 0 when every check passes, 1 when one fails, 2 on bad usage.\n"
#if !KVZCH_DEMO_HTTP
      "This build has no HTTP server (no usable cpp-httplib was found): --metrics-port fails.\n"
#endif
  );
}

bool parse_u64(std::string_view text, std::uint64_t min, std::uint64_t max, std::uint64_t* out) {
  const std::string s(text);
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || s.empty() || *end != '\0' || s[0] == '-' || value < min || value > max) {
    return false;
  }
  *out = value;
  return true;
}

bool parse_double(std::string_view text, double min, double max, double* out) {
  const std::string s(text);
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(s.c_str(), &end);
  if (errno != 0 || s.empty() || *end != '\0' || !(value >= min && value <= max)) {
    return false;
  }
  *out = value;
  return true;
}

// NAME:ROWS:BYTES. The library checks the name; the rows stay under 2^32
// because the request threads draw 32-bit offsets, and each row is at least
// 8 bytes because it starts with its own id, which the readers check.
bool parse_table(std::string_view text, TableSpec* out) {
  const std::size_t first = text.find(':');
  const std::size_t second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos || first == 0) {
    return false;
  }
  std::uint64_t rows = 0;
  std::uint64_t bytes = 0;
  if (!parse_u64(text.substr(first + 1, second - first - 1), 1, 100000000, &rows) ||
      !parse_u64(text.substr(second + 1), sizeof(std::int64_t), 65536, &bytes)) {
    return false;
  }
  *out = TableSpec{std::string(text.substr(0, first)), rows, static_cast<std::uint32_t>(bytes)};
  return true;
}

// Returns false (after printing why) when the program should exit; `status`
// is then its exit status: 0 after --help, 2 for a usage error.
bool parse_args(int argc, char** argv, Config* config, int* status) {
  *status = 2;
  bool tables_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      *status = 0;
      return false;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "predictor_demo: %s needs a value (see --help)\n", argv[i]);
      return false;
    }
    const std::string_view value = argv[++i];
    std::uint64_t n = 0;
    bool valid = false;
    if (arg == "--table") {
      TableSpec spec;
      valid = parse_table(value, &spec);
      if (valid) {
        if (!tables_given) {
          config->tables.clear();
          tables_given = true;
        }
        for (const TableSpec& t : config->tables) {
          if (t.name == spec.name) {
            std::fprintf(stderr, "predictor_demo: table %s given twice\n", t.name.c_str());
            return false;
          }
        }
        config->tables.push_back(spec);
      }
    } else if (arg == "--threads") {
      valid = parse_u64(value, 1, 256, &n);
      config->threads = static_cast<unsigned>(n);
    } else if (arg == "--duration") {
      valid = parse_u64(value, 1, 86400, &n);
      config->duration_s = static_cast<unsigned>(n);
    } else if (arg == "--batch") {
      valid = parse_u64(value, 1, 1 << 20, &n);
      config->batch = static_cast<std::size_t>(n);
    } else if (arg == "--zipf") {
      valid = parse_double(value, 0.0, 10.0, &config->zipf);
    } else if (arg == "--miss-ratio") {
      valid = parse_double(value, 0.0, 1.0, &config->miss_ratio);
    } else if (arg == "--library") {
      valid = !value.empty();
      config->library = std::string(value);
    } else if (arg == "--metrics-port") {
      valid = parse_u64(value, 0, 65535, &n);
      config->metrics_port = static_cast<int>(n);
    } else if (arg == "--linger") {
      valid = parse_u64(value, 0, 86400, &n);
      config->linger_s = static_cast<unsigned>(n);
    } else {
      std::fprintf(stderr, "predictor_demo: unknown option %s (see --help)\n", argv[i - 1]);
      return false;
    }
    if (!valid) {
      std::fprintf(stderr, "predictor_demo: bad value for %s: %s (see --help)\n", argv[i - 1],
                   argv[i]);
      return false;
    }
  }
#if !KVZCH_DEMO_HTTP
  if (config->metrics_port >= 0) {
    std::fprintf(stderr,
                 "predictor_demo: --metrics-port: this build has no HTTP server, because CMake did "
                 "not find a usable cpp-httplib\n(Debian: apt-get install libcpp-httplib-dev, then "
                 "configure and build again)\n");
    return false;
  }
#endif
  return true;
}

// SIGINT/SIGTERM end the traffic, a republish or the linger early; the main
// loop and the publishers poll. The handler may run on any thread (a
// worker's, the HTTP server's): a lock-free atomic, not a volatile, makes the
// pollers' reads race-free.
std::atomic<int> g_stop_requested{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only store to it so");
extern "C" void request_stop(int) { g_stop_requested = 1; }

// Batch lookup times in log-linear buckets (16 per power of two, so a
// quantile is within about 6%): bounded memory for any duration, and cheap
// enough for every batch. Snapshots subtract to give one second's.
class LatencyHistogram {
 public:
  static constexpr std::size_t kBuckets = 16 + 60 * 16;

  void record(std::uint64_t ns) { counts_[index(ns)].fetch_add(1, std::memory_order_relaxed); }

  [[nodiscard]] std::vector<std::uint64_t> snapshot() const {
    std::vector<std::uint64_t> out(kBuckets);
    for (std::size_t i = 0; i < kBuckets; ++i) {
      out[i] = counts_[i].load(std::memory_order_relaxed);
    }
    return out;
  }

  // The upper edge of the bucket holding the q-quantile, in microseconds;
  // 0 when there is nothing.
  static double quantile_us(const std::vector<std::uint64_t>& counts, double q) {
    const std::uint64_t n = std::accumulate(counts.begin(), counts.end(), std::uint64_t{0});
    if (n == 0) {
      return 0.0;
    }
    const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * n)));
    std::uint64_t seen = 0;
    std::size_t i = 0;
    for (; i + 1 < counts.size(); ++i) {
      seen += counts[i];
      if (seen >= rank) {
        break;
      }
    }
    return static_cast<double>(upper(i)) / 1e3;
  }

 private:
  static std::size_t index(std::uint64_t ns) {
    if (ns < 16) {
      return static_cast<std::size_t>(ns);
    }
    const int exponent = 63 - __builtin_clzll(ns);
    const std::uint64_t mantissa = (ns >> (exponent - 4)) & 15;
    return 16 + static_cast<std::size_t>(exponent - 4) * 16 + static_cast<std::size_t>(mantissa);
  }

  static std::uint64_t upper(std::size_t i) {
    if (i < 16) {
      return i;
    }
    const std::size_t exponent = (i - 16) / 16 + 4;
    const std::uint64_t mantissa = (i - 16) % 16;
    return ((16 + mantissa + 1) << (exponent - 4)) - 1;
  }

  std::atomic<std::uint64_t> counts_[kBuckets]{};
};

// Offsets 0..rows-1 drawn by Zipf rank (inverse CDF), each rank mapped to an
// offset by a fixed affine permutation, so the hot ids are scattered over
// the table rather than being its first ones. Drawn once into a pool that
// the request threads read from random places: drawing costs more than a
// lookup, and the demo measures the cache, not the sampler.
class ZipfPool {
 public:
  ZipfPool(std::uint64_t rows, double exponent, std::uint64_t seed) {
    std::vector<double> cdf(rows);
    double sum = 0.0;
    for (std::uint64_t r = 0; r < rows; ++r) {
      sum += 1.0 / std::pow(static_cast<double>(r + 1), exponent);
      cdf[r] = sum;
    }
    std::uint64_t stride = 2654435761u % rows;
    while (std::gcd(stride, rows) != 1) {
      ++stride;
    }
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(0.0, sum);
    pool_.resize(kPool);
    for (std::uint32_t& offset : pool_) {
      const auto rank = static_cast<std::uint64_t>(
          std::lower_bound(cdf.begin(), cdf.end(), uniform(rng)) - cdf.begin());
      offset = static_cast<std::uint32_t>((std::min(rank, rows - 1) * stride + 7) % rows);
    }
  }

  static constexpr std::size_t kPool = std::size_t{1} << 20;
  [[nodiscard]] std::uint32_t at(std::size_t i) const { return pool_[i & (kPool - 1)]; }

 private:
  std::vector<std::uint32_t> pool_;
};

// Ids the tables never hold: every miss the --miss-ratio asks for is one of
// these, so the steady hit rate is about 1 - miss ratio.
constexpr std::int64_t kColdIdBase = std::int64_t{1} << 40;

struct Table {
  TableSpec spec;
  std::int64_t shift = 0; // the new version's first id
  // Set by the table's republish once every row of the new version is
  // stored, just before the old version's rows start to go.
  std::atomic<bool> new_version_stored{false};
  // Set once the new version is stored, the old one evicted and the counts
  // of both checked.
  std::atomic<bool> republished{false};
  std::unique_ptr<kvzch::Cache> cache;
  std::unique_ptr<ZipfPool> zipf;
  LatencyHistogram latency;
  kvzch_read_stats windows{}; // read_hit_rate_stats() summed, by the main thread
};

double percent(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

double mib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::uint32_t unix_seconds() {
  return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// Publishes ids first..first+rows-1, each row starting with its id. With a
// nonzero `span`, paced to take about that long, as a new version streams
// in from a model store. Stops early on SIGINT or SIGTERM or once `abandon`
// is set, and only then: the end of the traffic waits for a republish, so
// that every run checks one. Whether every row was published.
bool publish(kvzch::Cache& cache, std::int64_t first, std::uint64_t rows, std::uint32_t row_bytes,
             std::uint32_t timestamp, std::chrono::duration<double> span,
             const std::atomic<bool>& abandon) {
  const std::size_t chunk = 4096;
  std::vector<std::int64_t> ids;
  std::vector<unsigned char> buf;
  const auto start = SteadyClock::now();
  std::uint64_t done = 0;
  while (done < rows && g_stop_requested == 0 && !abandon.load(std::memory_order_relaxed)) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, rows - done));
    ids.resize(n);
    buf.resize(n * row_bytes);
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = first + static_cast<std::int64_t>(done + i);
      unsigned char* row = buf.data() + i * row_bytes;
      std::memcpy(row, &ids[i], sizeof ids[i]);
      std::memset(row + sizeof ids[i], static_cast<int>(ids[i] & 0xff), row_bytes - sizeof ids[i]);
    }
    cache.batch_set(ids.data(), n, buf.data(), buf.size(), timestamp);
    done += n;
    if (span.count() > 0) {
      std::this_thread::sleep_until(start + std::chrono::duration_cast<SteadyClock::duration>(
                                                span * (static_cast<double>(done) / rows)));
    }
  }
  return done == rows;
}

struct ServeTotals {
  std::atomic<std::uint64_t> wrong_rows{0};
  std::atomic<std::uint64_t> stored_ids_missed{0};
  std::atomic<std::uint64_t> miscounted_batches{0};
  std::atomic<std::uint64_t> errors{0};
};

// One request thread: a batch on every table in turn, until `stop`.
void serve(std::vector<Table>& tables, const Config& config, unsigned index,
           const std::atomic<bool>& shifted, const std::atomic<bool>& stop, ServeTotals& totals) {
  std::mt19937_64 rng(0x6b767a6368ull + index);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<std::int64_t> ids(config.batch);
  std::vector<std::uint8_t> mask(config.batch);
  std::vector<unsigned char> out;
  while (!stop.load(std::memory_order_relaxed)) {
    for (Table& table : tables) {
      const bool new_version = shifted.load(std::memory_order_relaxed);
      const std::int64_t base = new_version ? table.shift : 0;
      // Read before the batch: then every id of the new version is stored.
      const bool new_version_stored = table.new_version_stored.load();
      std::size_t at = static_cast<std::size_t>(rng());
      for (std::int64_t& id : ids) {
        id = uniform(rng) < config.miss_ratio
                 ? kColdIdBase + static_cast<std::int64_t>(rng() % table.spec.rows)
                 : base + table.zipf->at(at++);
      }
      kvzch_batch_stats stats{};
      try {
        out.resize(ids.size() * table.spec.row_bytes);  // --batch x row bytes may not fit
        stats = table.cache->batch_get(ids.data(), ids.size(), out.data(), out.size(), mask.data());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "predictor_demo: %s: %s\n", table.spec.name.c_str(), e.what());
        totals.errors.fetch_add(1);
        return;
      }
      table.latency.record(stats.duration_ns);
      // A hit must carry its own id: a cache returning another key's row is
      // the upstream bug this library exists to rule out.
      std::uint64_t wrong = 0;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        std::int64_t stored = 0;
        std::memcpy(&stored, out.data() + i * table.spec.row_bytes, sizeof stored);
        wrong += mask[i] != 0 && stored != ids[i];
      }
      if (wrong != 0) {
        totals.wrong_rows.fetch_add(wrong);
      }
      // The batch's counts, which the counters, windows and sinks all carry,
      // must be its hit mask's: the hit rate is what the demo exports.
      const auto hits = static_cast<std::uint64_t>(std::count(mask.begin(), mask.end(), 1));
      if (stats.hits != hits || stats.misses != ids.size() - hits || stats.total != ids.size()) {
        totals.miscounted_batches.fetch_add(1);
      }
      // A stored id must hit: the old version's until its eviction may have
      // begun (read after the batch, whose locks order it after any evicted
      // row it missed), the new version's once all of it is stored.
      if (new_version ? new_version_stored : !table.new_version_stored.load()) {
        std::uint64_t missed = 0;
        for (std::size_t i = 0; i < ids.size(); ++i) {
          missed += mask[i] == 0 && ids[i] < kColdIdBase;
        }
        if (missed != 0) {
          totals.stored_ids_missed.fetch_add(missed);
        }
      }
    }
  }
}

#if KVZCH_DEMO_HTTP
// GET /metrics on a loopback address only: the counters are the operator's,
// not the network's.
class MetricsServer {
 public:
  MetricsServer(int port, std::function<std::string()> render) {
    server_.Get("/metrics", [render = std::move(render)](const httplib::Request&,
                                                         httplib::Response& response) {
      try {
        response.set_content(render(), std::string(kvzch::PrometheusText::content_type));
      } catch (const std::exception& e) {
        response.status = 500;
        response.set_content(std::string(e.what()) + "\n", "text/plain");
      }
    });
    port_ = port == 0 ? server_.bind_to_any_port("127.0.0.1")
                      : (server_.bind_to_port("127.0.0.1", port) ? port : -1);
    if (port_ < 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port));
    }
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      finished_ = true;
    });
    // stop() only stops a server that is already running: wait for that (or
    // for a listen that failed) so the destructor cannot miss it.
    while (!server_.is_running() && !finished_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  ~MetricsServer() {
    server_.stop();
    thread_.join();
  }

  [[nodiscard]] int port() const { return port_; }

 private:
  httplib::Server server_;
  int port_ = -1;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};
#endif

// The request and publisher threads. Stops and joins them on the way out of
// run(), also when it throws: a joinable std::thread destroyed by the
// unwinding would call std::terminate, where the demo promises exit status 1.
struct TrafficThreads {
  explicit TrafficThreads(std::atomic<bool>& stop_flag) : stop(stop_flag) {}
  TrafficThreads(const TrafficThreads&) = delete;
  TrafficThreads& operator=(const TrafficThreads&) = delete;
  // Reached with publishers still running only when run() throws: their
  // republish is abandoned then, not waited for.
  ~TrafficThreads() {
    abandon = true;
    stop_traffic();
    join_publishers();
  }

  void stop_traffic() {
    stop = true;
    join(workers);
  }

  // Waits for the republish to end: only a signal cuts it short (publish).
  void join_publishers() { join(publishers); }

  static void join(std::vector<std::thread>& group) {
    for (std::thread& t : group) {
      if (t.joinable()) t.join();
    }
  }

  std::atomic<bool>& stop;
  std::atomic<bool> abandon{false}; // for publish
  std::vector<std::thread> workers;
  std::vector<std::thread> publishers;
};

// Sleeps until `until`, waking early for a stop request.
void sleep_until_or_stop(SteadyClock::time_point until) {
  while (g_stop_requested == 0) {
    const auto now = SteadyClock::now();
    if (now >= until) {
      return;
    }
    std::this_thread::sleep_for(
        std::min<SteadyClock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

int run(const Config& config) {
  const kvzch::Library library =
      config.library.empty() ? kvzch::Library::linked() : kvzch::Library::open(config.library);
  const std::uint32_t abi = library.abi_version();
  const std::string hit_name(kvzch::stat_name(library, KVZCH_STAT_READ_HIT_COUNT));
  const std::string miss_name(kvzch::stat_name(library, KVZCH_STAT_READ_MISS_COUNT));
  const std::string total_name(kvzch::stat_name(library, KVZCH_STAT_READ_TOTAL_COUNT));

  std::printf("kvzch %s (ABI %" PRIu32 ".%" PRIu32 ", %s): %zu table%s, %u request threads, %u s, "
              "batches of %zu ids, Zipf(%.2f), %.0f%% of lookups for ids never published\n",
              library.version().c_str(), abi >> 16, abi & 0xFFFFu,
              config.library.empty() ? "linked" : config.library.c_str(), config.tables.size(),
              config.tables.size() == 1 ? "" : "s", config.threads, config.duration_s,
              config.batch, config.zipf,
              100.0 * config.miss_ratio);

  // The host's stats layer, fed by global sinks on every batch of every cache
  // of this library. Declared before the caches so they outlive them.
  kvzch::SumStats fb303;
  kvzch::PrometheusReadStats prometheus(library);
  const kvzch::SinkRegistration fb303_sink = library.on_any_batch(fb303.sink(library));
  const kvzch::SinkRegistration prometheus_sink = library.on_any_batch(prometheus.sink());

  std::vector<Table> tables(config.tables.size());
  const std::uint32_t first_version = unix_seconds();
  std::chrono::duration<double> publish_time{0};
  std::uint64_t memory = 0;
  for (std::size_t i = 0; i < tables.size(); ++i) {
    Table& t = tables[i];
    t.spec = config.tables[i];
    t.shift = static_cast<std::int64_t>(t.spec.rows / 2);
    t.cache = std::make_unique<kvzch::Cache>(
        library, kvzch::Options().row_bytes(t.spec.row_bytes).name(t.spec.name));
    t.zipf = std::make_unique<ZipfPool>(t.spec.rows, config.zipf, 20240601 + i);
    const auto publish_start = SteadyClock::now();
    // The table's size is known: the index is sized for it once instead of
    // growing as the rows come (ABI 1.2; an older library just grows).
    if (library.has("reserve")) t.cache->reserve(t.spec.rows);
    publish(*t.cache, 0, t.spec.rows, t.spec.row_bytes, first_version, {},
            /*abandon=*/std::atomic<bool>{false});
    publish_time += SteadyClock::now() - publish_start;
    prometheus.add_table(t.spec.name);
    memory += t.cache->info().memory_bytes;
  }
  std::printf("published");
  for (const Table& t : tables) {
    std::printf(" %s (%" PRIu64 " x %" PRIu32 " B)", t.spec.name.c_str(), t.spec.rows,
                t.spec.row_bytes);
  }
  std::printf(" in %.2f s; the caches hold %.1f MiB\n",
              publish_time.count(), mib(memory));

#if KVZCH_DEMO_HTTP
  // A scraper hanging up mid-response must not kill the predictor.
  std::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<MetricsServer> server;
  if (config.metrics_port >= 0) {
    server = std::make_unique<MetricsServer>(config.metrics_port, [&] {
      kvzch::PrometheusText text;
      prometheus.write(text);
      for (const Table& t : tables) {
        kvzch::write_cache_info(text, t.spec.name, t.cache->info());
      }
      return text.str();
    });
    std::printf("metrics: serving http://127.0.0.1:%d/metrics\n", server->port());
  }
#endif
  std::fflush(stdout);

  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_stop);

  std::atomic<bool> stop{false};
  std::atomic<bool> shifted{false};
  ServeTotals totals;
  const auto serve_start = SteadyClock::now();
  const auto since_start = [&serve_start] {
    return std::chrono::duration<double>(SteadyClock::now() - serve_start).count();
  };
  const auto deadline = serve_start + std::chrono::seconds(config.duration_s);
  const auto republish_at = serve_start + std::chrono::milliseconds(config.duration_s * 500);
  const std::chrono::duration<double> republish_span(config.duration_s / 5.0);
  // After everything its threads use, so that it joins them before those go.
  TrafficThreads threads(stop);
  for (unsigned i = 0; i < config.threads; ++i) {
    threads.workers.emplace_back(serve, std::ref(tables), std::cref(config), i,
                                 std::cref(shifted), std::cref(stop), std::ref(totals));
  }
  std::vector<std::uint64_t> last_hits(tables.size());
  std::vector<std::uint64_t> last_total(tables.size());
  std::vector<std::uint64_t> last_latency(LatencyHistogram::kBuckets);
  auto last_tick = serve_start;
  bool republish_started = false;
  for (int second = 1;; ++second) {
    const auto tick = std::min(deadline, serve_start + std::chrono::seconds(second));
    if (!republish_started && republish_at <= tick) {
      sleep_until_or_stop(republish_at);
      if (g_stop_requested == 0) {
        republish_started = true;
        const std::uint32_t next_version = std::max(unix_seconds(), first_version + 1);
        std::printf("[%5.1fs] new version, timestamp %" PRIu32 ": traffic moves to ids shifted "
                    "by half of each table while they stream in over %.1f s\n",
                    since_start(), next_version, republish_span.count());
        std::fflush(stdout);
        shifted = true;
        for (Table& table : tables) {
          threads.publishers.emplace_back([&, t = &table, next_version] {
            try {
              if (!publish(*t->cache, t->shift, t->spec.rows, t->spec.row_bytes, next_version,
                           republish_span, threads.abandon)) {
                std::printf("[%5.1fs] %s: stopped before the new version was stored\n",
                            since_start(), t->spec.name.c_str());
                return;
              }
              t->new_version_stored = true;
              const std::uint64_t evicted = t->cache->evict_older_than(next_version);
              // The old version's ids below the new one's go; the table holds
              // the new version whole.
              const auto expected_evicted = static_cast<std::uint64_t>(t->shift);
              const std::uint64_t rows = t->cache->info().rows;
              if (evicted != expected_evicted || rows != t->spec.rows) {
                throw std::runtime_error(
                    "evict_older_than removed " + std::to_string(evicted) + " rows and left " +
                    std::to_string(rows) + ", expected " + std::to_string(expected_evicted) +
                    " and " + std::to_string(t->spec.rows));
              }
              const bool compact = library.has("compact");
              if (compact) {
                t->cache->compact();
              }
              std::printf("[%5.1fs] %s: republished; evict_older_than(%" PRIu32 ") removed %" PRIu64
                          " rows%s\n",
                          since_start(), t->spec.name.c_str(), next_version, evicted,
                          compact ? "; compacted" : "");
              std::fflush(stdout);
              t->republished = true;
            } catch (const std::exception& e) {
              // A kvzch::Error, or a row buffer that cannot be allocated:
              // reported and counted, so the run fails its check, instead of
              // std::terminate from the thread.
              std::fprintf(stderr, "predictor_demo: republish %s: %s\n", t->spec.name.c_str(),
                           e.what());
              totals.errors.fetch_add(1);
            }
          });
        }
      }
    }
    sleep_until_or_stop(tick);
    const bool last = tick >= deadline || g_stop_requested != 0;
    if (last) {
      threads.stop_traffic();
    }
    const auto now = SteadyClock::now();
    const double elapsed = std::chrono::duration<double>(now - last_tick).count();
    last_tick = now;

    std::uint64_t lookups = 0;
    memory = 0;
    std::vector<std::uint64_t> latency(LatencyHistogram::kBuckets);
    std::string hit_rates;
    for (std::size_t i = 0; i < tables.size(); ++i) {
      Table& t = tables[i];
      const kvzch_read_stats window = t.cache->read_hit_rate_stats();
      t.windows.hits += window.hits;
      t.windows.misses += window.misses;
      t.windows.total += window.total;
      const auto hits = static_cast<std::uint64_t>(fb303.total(hit_name + "." + t.spec.name));
      const auto total = static_cast<std::uint64_t>(fb303.total(total_name + "." + t.spec.name));
      lookups += total - last_total[i];
      char buf[96];
      std::snprintf(buf, sizeof buf, "  %s %.1f/%.1f", t.spec.name.c_str(),
                    percent(hits - last_hits[i], total - last_total[i]), percent(hits, total));
      hit_rates += buf;
      last_hits[i] = hits;
      last_total[i] = total;
      const std::vector<std::uint64_t> snapshot = t.latency.snapshot();
      for (std::size_t b = 0; b < snapshot.size(); ++b) {
        latency[b] += snapshot[b];
      }
      memory += t.cache->info().memory_bytes;
    }
    std::vector<std::uint64_t> this_second(latency.size());
    for (std::size_t b = 0; b < latency.size(); ++b) {
      this_second[b] = latency[b] - last_latency[b];
    }
    last_latency = latency;
    std::printf("[%5.1fs] %5.2f M rows/s  batch p50 %5.1f us  p99 %6.1f us  %6.1f MiB | hit%% "
                "last 1 s/since start:%s\n",
                since_start(), static_cast<double>(lookups) / elapsed / 1e6,
                LatencyHistogram::quantile_us(this_second, 0.50),
                LatencyHistogram::quantile_us(this_second, 0.99), mib(memory), hit_rates.c_str());
    std::fflush(stdout);
    if (last) {
      break;
    }
  }
  const double serve_s = since_start();
  threads.join_publishers();

  // Every batch_get has returned, and a sink runs before its batch_get
  // returns, so the registries are complete: every check below is exact.
  bool registries_agree = true;
  bool windows_agree = true;
  bool every_table_served = true;
  kvzch_read_stats all{};
  std::uint64_t all_batches = 0;
  std::vector<std::uint64_t> all_latency(LatencyHistogram::kBuckets);
  std::printf("\nsummary: %.1f s of traffic, %u request threads, batches of %zu ids\n", serve_s,
              config.threads, config.batch);
  std::printf("  %-8s %6s %10s %9s %9s %12s %12s %11s %7s %7s %7s\n", "table", "bytes", "rows",
              "MiB", "batches", "lookups", "hits", "misses", "hit%", "p50us", "p99us");
  for (Table& t : tables) {
    const kvzch_read_stats cumulative = t.cache->cumulative_read_stats();
    const kvzch_cache_info info = t.cache->info();
    const std::vector<std::uint64_t> latency = t.latency.snapshot();
    const std::uint64_t batches = std::accumulate(latency.begin(), latency.end(), std::uint64_t{0});
    const kvzch::PrometheusReadStats::Counts prom = prometheus.counts(t.spec.name);
    const auto fb = [&](const std::string& name) {
      return static_cast<std::uint64_t>(fb303.total(name + "." + t.spec.name));
    };
    registries_agree = registries_agree && fb(hit_name) == cumulative.hits &&
                       fb(miss_name) == cumulative.misses && fb(total_name) == cumulative.total &&
                       prom.hits == cumulative.hits && prom.misses == cumulative.misses &&
                       prom.total == cumulative.total && prom.batches == batches;
    every_table_served = every_table_served && cumulative.total > 0;
    windows_agree = windows_agree && t.windows.hits == cumulative.hits &&
                    t.windows.misses == cumulative.misses && t.windows.total == cumulative.total;
    all.hits += cumulative.hits;
    all.misses += cumulative.misses;
    all.total += cumulative.total;
    all_batches += batches;
    for (std::size_t b = 0; b < latency.size(); ++b) {
      all_latency[b] += latency[b];
    }
    std::printf("  %-8s %6" PRIu32 " %10" PRIu64 " %9.1f %9" PRIu64 " %12" PRIu64 " %12" PRIu64
                " %11" PRIu64 " %7.2f %7.1f %7.1f\n",
                t.spec.name.c_str(), t.spec.row_bytes, info.rows, mib(info.memory_bytes), batches,
                cumulative.total, cumulative.hits, cumulative.misses,
                percent(cumulative.hits, cumulative.total),
                LatencyHistogram::quantile_us(latency, 0.50),
                LatencyHistogram::quantile_us(latency, 0.99));
  }
  std::printf("  %-8s %6s %10s %9s %9" PRIu64 " %12" PRIu64 " %12" PRIu64 " %11" PRIu64
              " %7.2f %7.1f %7.1f\n",
              "all", "", "", "", all_batches, all.total, all.hits, all.misses,
              percent(all.hits, all.total), LatencyHistogram::quantile_us(all_latency, 0.50),
              LatencyHistogram::quantile_us(all_latency, 0.99));
  std::printf("  throughput %.2f M rows/s\n", static_cast<double>(all.total) / serve_s / 1e6);

  registries_agree = registries_agree &&
                     fb303.total(hit_name) == static_cast<std::int64_t>(all.hits) &&
                     fb303.total(miss_name) == static_cast<std::int64_t>(all.misses) &&
                     fb303.total(total_name) == static_cast<std::int64_t>(all.total);

  std::printf("\nfb303-style counters (kvzch::SumStats::counters(); the same per table, e.g. "
              "%s.%s.sum.60):\n",
              hit_name.c_str(), tables.front().spec.name.c_str());
  const std::map<std::string, std::int64_t> counters = fb303.counters();
  for (const std::string& name : {hit_name, miss_name, total_name}) {
    for (const char* suffix : {".sum.60", ".sum"}) {
      const auto it = counters.find(name + suffix);
      std::printf("  %-40s %14" PRId64 "\n", (name + suffix).c_str(),
                  it == counters.end() ? 0 : it->second);
    }
  }

  const std::uint64_t wrong = totals.wrong_rows.load();
  const std::uint64_t stored_missed = totals.stored_ids_missed.load();
  const std::uint64_t miscounted = totals.miscounted_batches.load();
  const std::uint64_t errors = totals.errors.load();
  const std::uint64_t swallowed = kvzch::swallowed_sink_exceptions();
  const auto tables_republished = static_cast<std::size_t>(std::count_if(
      tables.begin(), tables.end(), [](const Table& t) { return t.republished.load(); }));
  // Only a signal stops a republish before its end (publish).
  const bool interrupted = g_stop_requested != 0;
  std::printf("\nchecks against cumulative_read_stats() of each cache\n");
  std::printf("  fb303-style and Prometheus registries  %s\n",
              registries_agree ? "agree" : "DISAGREE");
  std::printf("  read_hit_rate_stats() windows summed   %s\n",
              windows_agree ? "agree" : "DISAGREE");
  std::printf("  hits carrying another id's row         %" PRIu64 "\n", wrong);
  std::printf("  stored ids that missed                 %" PRIu64 "\n", stored_missed);
  std::printf("  batches counted unlike their hit mask  %" PRIu64 "\n", miscounted);
  std::printf("  failed calls, sink exceptions          %" PRIu64 ", %" PRIu64 "\n", errors,
              swallowed);
  std::printf("  tables republished, old rows evicted   %zu of %zu%s\n", tables_republished,
              tables.size(),
              interrupted && tables_republished < tables.size() ? " (interrupted)" : "");
  if (!every_table_served) {
    std::printf("  a table served no lookup: nothing was compared\n");
  }
  const bool ok = registries_agree && windows_agree && every_table_served && wrong == 0 &&
                  stored_missed == 0 && miscounted == 0 && errors == 0 && swallowed == 0 &&
                  (tables_republished == tables.size() || interrupted);
  std::printf("%s\n", ok ? "OK" : "FAILED");

#if KVZCH_DEMO_HTTP
  if (server && config.linger_s > 0 && g_stop_requested == 0) {
    std::printf("metrics: traffic stopped; /metrics serves these final counts for %u s "
                "(SIGINT/SIGTERM ends it)\n",
                config.linger_s);
    std::fflush(stdout);
    sleep_until_or_stop(SteadyClock::now() + std::chrono::seconds(config.linger_s));
  }
#endif
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  int status = 0;
  if (!parse_args(argc, argv, &config, &status)) {
    return status;
  }
  try {
    return run(config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "predictor_demo: %s\n", e.what());
    return 1;
  }
}
