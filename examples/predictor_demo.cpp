// predictor_demo: a C++ predictor host on top of kvzch.hpp.
//
// It publishes one embedding table, serves Zipf-distributed lookups from
// several request threads, and exports the read-time hit rate the way a
// predictor does: a sink turns every batch into fb303-style
// add_stat_value(name, value) calls on the host's own stats registry. Each
// second it prints the hit rate seen by that registry and by the library's
// read_hit_rate_stats(); at the end it checks that the registry, the sum of
// the windows and cumulative_read_stats() all agree, batch for batch.
#include "kvzch.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Config {
  unsigned threads = 2;
  double duration_s = 5.0;
  std::uint64_t rows = 200000;
  std::uint32_t row_bytes = 128;
  std::size_t batch = 512;
  double zipf_s = 1.05;
  // Traffic covers 10% more ids than the table holds, so there are misses
  // spread over hot and cold keys alike, as after a partial publish.
  double key_space_factor = 1.1;
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: predictor_demo [--threads N] [--duration S] [--rows N] [--row-bytes N]\n"
               "  --threads N     request threads (default 2)\n"
               "  --duration S    seconds of traffic (default 5)\n"
               "  --rows N        rows published into the table (default 200000)\n"
               "  --row-bytes N   bytes per row, 8..65536 (default 128)\n");
}

bool parse_u64(const char* text, std::uint64_t min, std::uint64_t max, std::uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value < min || value > max) {
    return false;
  }
  *out = value;
  return true;
}

// Returns false (after printing why) when the program should exit; `ok`
// tells whether that exit is a success (--help) or a usage error.
bool parse_args(int argc, char** argv, Config* config, bool* ok) {
  *ok = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return false;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "predictor_demo: %s needs a value\n", argv[i]);
      usage(stderr);
      *ok = false;
      return false;
    }
    const char* value = argv[++i];
    std::uint64_t n = 0;
    bool valid = false;
    if (arg == "--threads") {
      valid = parse_u64(value, 1, 256, &n);
      config->threads = static_cast<unsigned>(n);
    } else if (arg == "--duration") {
      valid = parse_u64(value, 1, 3600, &n);
      config->duration_s = static_cast<double>(n);
    } else if (arg == "--rows") {
      valid = parse_u64(value, 1, std::uint64_t{1} << 32, &n);
      config->rows = n;
    } else if (arg == "--row-bytes") {
      // Each row starts with its own id, which the readers check.
      valid = parse_u64(value, sizeof(std::int64_t), 65536, &n);
      config->row_bytes = static_cast<std::uint32_t>(n);
    } else {
      std::fprintf(stderr, "predictor_demo: unknown option %s\n", argv[i - 1]);
      usage(stderr);
      *ok = false;
      return false;
    }
    if (!valid) {
      std::fprintf(stderr, "predictor_demo: bad value for %s: %s\n", argv[i - 1], value);
      usage(stderr);
      *ok = false;
      return false;
    }
  }
  return true;
}

// The host's own stats service, shaped like fb303's: named counters summed
// by add_stat_value, created on first use. Readers take the lock shared, so
// request threads only contend when a new name appears.
class StatsRegistry {
 public:
  void add_stat_value(std::string_view name, std::int64_t value) {
    counter(name).fetch_add(value, std::memory_order_relaxed);
  }

  std::int64_t sum(std::string_view name) const {
    std::shared_lock lock(mutex_);
    const auto it = counters_.find(name);
    return it == counters_.end() ? 0 : it->second.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<std::int64_t>& counter(std::string_view name) {
    {
      std::shared_lock lock(mutex_);
      const auto it = counters_.find(name);
      if (it != counters_.end()) return it->second;
    }
    std::unique_lock lock(mutex_);
    return counters_.try_emplace(std::string(name), 0).first->second;
  }

  mutable std::shared_mutex mutex_;
  // std::map: nodes never move, so the references handed out stay valid.
  std::map<std::string, std::atomic<std::int64_t>, std::less<>> counters_;
};

// Zipf(s) over ranks 0..n-1 by inverse CDF; each rank is then mapped through
// a fixed shuffle so the hot ids are scattered over the id space (and over
// the present and absent ids) instead of being 0, 1, 2, ...
class ZipfIds {
 public:
  ZipfIds(std::uint64_t n, double s) : cdf_(n), ids_(n) {
    double total = 0.0;
    for (std::uint64_t r = 0; r < n; ++r) {
      total += 1.0 / std::pow(static_cast<double>(r + 1), s);
      cdf_[r] = total;
    }
    for (double& c : cdf_) c /= total;
    for (std::uint64_t r = 0; r < n; ++r) ids_[r] = static_cast<std::int64_t>(r);
    std::shuffle(ids_.begin(), ids_.end(), std::mt19937_64(20240601));
  }

  template <class Rng>
  std::int64_t operator()(Rng& rng) const {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    const std::size_t rank = std::min<std::size_t>(it - cdf_.begin(), ids_.size() - 1);
    return ids_[rank];
  }

 private:
  std::vector<double> cdf_;
  std::vector<std::int64_t> ids_;
};

double rate(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

std::uint32_t now_seconds() {
  return static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

void publish(kvzch::Cache& cache, const Config& config, std::uint32_t timestamp) {
  const std::size_t chunk = 4096;
  std::vector<std::int64_t> ids;
  std::vector<unsigned char> rows;
  for (std::uint64_t first = 0; first < config.rows; first += chunk) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, config.rows - first));
    ids.resize(n);
    rows.assign(n * config.row_bytes, 0);
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = static_cast<std::int64_t>(first + i);
      unsigned char* row = rows.data() + i * config.row_bytes;
      std::memcpy(row, &ids[i], sizeof ids[i]);
      for (std::uint32_t b = sizeof ids[i]; b < config.row_bytes; ++b) {
        row[b] = static_cast<unsigned char>(ids[i] + b);
      }
    }
    cache.batch_set(ids.data(), n, rows.data(), rows.size(), timestamp);
  }
}

struct ServeTotals {
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> wrong_rows{0};
  std::atomic<std::uint64_t> errors{0};
};

void serve(kvzch::Cache& cache, const Config& config, const ZipfIds& zipf, unsigned thread_index,
           const std::atomic<bool>& stop, ServeTotals& totals) {
  std::mt19937_64 rng(0x6b767a6368ull + thread_index);
  std::vector<std::int64_t> ids(config.batch);
  std::vector<unsigned char> out(config.batch * config.row_bytes);
  std::vector<std::uint8_t> mask(config.batch);
  while (!stop.load(std::memory_order_relaxed)) {
    for (std::int64_t& id : ids) id = zipf(rng);
    try {
      static_cast<void>(cache.batch_get(ids.data(), ids.size(), out.data(), out.size(), mask.data()));
    } catch (const kvzch::Error& e) {
      std::fprintf(stderr, "predictor_demo: %s\n", e.what());
      totals.errors.fetch_add(1);
      return;
    }
    // A hit must carry its own id: a cache returning another key's row is
    // the upstream bug this library exists to rule out.
    std::uint64_t wrong = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      std::int64_t stored = 0;
      std::memcpy(&stored, out.data() + i * config.row_bytes, sizeof stored);
      if (mask[i] != 0 && stored != ids[i]) ++wrong;
    }
    if (wrong != 0) totals.wrong_rows.fetch_add(wrong);
    totals.batches.fetch_add(1, std::memory_order_relaxed);
  }
}

int run(const Config& config) {
  std::printf("kvzch %s (ABI %" PRIu32 ".%" PRIu32 "): %" PRIu64 " rows x %" PRIu32
              " bytes, %u threads, %.0f s, Zipf(%.2f) over %.1fx the key space\n",
              kvzch_version(), kvzch_abi_version() >> 16, kvzch_abi_version() & 0xFFFFu,
              config.rows, config.row_bytes, config.threads, config.duration_s, config.zipf_s,
              config.key_space_factor);

  kvzch::Cache cache(kvzch::Options().row_bytes(config.row_bytes).name("predictor.user_embeddings"));

  const auto publish_start = std::chrono::steady_clock::now();
  publish(cache, config, now_seconds());
  const double publish_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - publish_start).count();
  const kvzch_cache_info info = cache.info();
  std::printf("published %" PRIu64 " rows in %.2f s (%.1f M rows/s); the cache holds %.1f MiB in %" PRIu32
              " shards\n",
              info.rows, publish_s, static_cast<double>(info.rows) / publish_s / 1e6,
              static_cast<double>(info.memory_bytes) / (1024.0 * 1024.0), info.num_shards);

  const ZipfIds zipf(static_cast<std::uint64_t>(static_cast<double>(config.rows) * config.key_space_factor),
                     config.zipf_s);

  // The adapter exports under these names; the registry is read back by them.
  const std::string_view hit_name = kvzch_stat_name(KVZCH_STAT_READ_HIT_COUNT);
  const std::string_view miss_name = kvzch_stat_name(KVZCH_STAT_READ_MISS_COUNT);
  const std::string_view total_name = kvzch_stat_name(KVZCH_STAT_READ_TOTAL_COUNT);
  StatsRegistry registry;
  kvzch::SinkRegistration export_stats = cache.on_batch(kvzch::fb303_style(
      [&registry](std::string_view name, std::int64_t value) { registry.add_stat_value(name, value); }));

  std::atomic<bool> stop{false};
  ServeTotals totals;
  std::vector<std::thread> workers;
  const auto serve_start = std::chrono::steady_clock::now();
  for (unsigned t = 0; t < config.threads; ++t) {
    workers.emplace_back(serve, std::ref(cache), std::cref(config), std::cref(zipf), t, std::cref(stop),
                         std::ref(totals));
  }

  std::uint64_t window_sum = 0;
  std::uint64_t last_registry_hits = 0;
  std::uint64_t last_registry_total = 0;
  const auto deadline = serve_start + std::chrono::duration<double>(config.duration_s);
  for (int second = 1;; ++second) {
    const auto tick = serve_start + std::chrono::seconds(second);
    const bool last = tick >= deadline;
    std::this_thread::sleep_until(last ? deadline : tick);
    if (last) {
      stop.store(true);
      for (std::thread& w : workers) w.join();
    }
    const kvzch_read_stats window = cache.read_hit_rate_stats();
    window_sum += window.total;
    const auto registry_hits = static_cast<std::uint64_t>(registry.sum(hit_name));
    const auto registry_total = static_cast<std::uint64_t>(registry.sum(total_name));
    std::printf("[%3ds] registry: %9" PRIu64 " lookups, hit rate %6.2f%% | read_hit_rate_stats: %9" PRIu64
                " lookups, hit rate %6.2f%%\n",
                second, registry_total - last_registry_total,
                rate(registry_hits - last_registry_hits, registry_total - last_registry_total),
                window.total, rate(window.hits, window.total));
    std::fflush(stdout);
    last_registry_hits = registry_hits;
    last_registry_total = registry_total;
    if (last) break;
  }
  const double serve_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - serve_start).count();
  export_stats.reset();

  const kvzch_read_stats cumulative = cache.cumulative_read_stats();
  const auto reg_hits = static_cast<std::uint64_t>(registry.sum(hit_name));
  const auto reg_misses = static_cast<std::uint64_t>(registry.sum(miss_name));
  const auto reg_total = static_cast<std::uint64_t>(registry.sum(total_name));
  const bool registry_agrees =
      reg_hits == cumulative.hits && reg_misses == cumulative.misses && reg_total == cumulative.total;
  const bool windows_agree = window_sum == cumulative.total;
  const bool consistent = cumulative.hits + cumulative.misses == cumulative.total;

  std::printf("\nsummary\n");
  std::printf("  batches          %" PRIu64 " x %zu ids\n", totals.batches.load(), config.batch);
  std::printf("  lookups          %" PRIu64 " (%" PRIu64 " hits, %" PRIu64 " misses)\n", cumulative.total,
              cumulative.hits, cumulative.misses);
  std::printf("  hit rate         %.2f%%\n", rate(cumulative.hits, cumulative.total));
  std::printf("  throughput       %.2f M rows/s over %.2f s\n",
              static_cast<double>(cumulative.total) / serve_s / 1e6, serve_s);
  std::printf("  registry         hits %" PRIu64 ", misses %" PRIu64 ", total %" PRIu64 ": %s\n", reg_hits,
              reg_misses, reg_total, registry_agrees ? "agrees with cumulative_read_stats()" : "DISAGREES");
  std::printf("  windows          %" PRIu64 " lookups summed over read_hit_rate_stats(): %s\n", window_sum,
              windows_agree ? "agrees with cumulative_read_stats()" : "DISAGREES");
  std::printf("  wrong rows       %" PRIu64 "\n", totals.wrong_rows.load());
  std::printf("  sink exceptions  %" PRIu64 "\n", kvzch::swallowed_sink_exceptions());

  const bool ok = registry_agrees && windows_agree && consistent && totals.wrong_rows.load() == 0 &&
                  totals.errors.load() == 0 && kvzch::swallowed_sink_exceptions() == 0 &&
                  cumulative.total > 0;
  std::printf("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  bool ok = true;
  if (!parse_args(argc, argv, &config, &ok)) return ok ? 0 : 2;
  try {
    return run(config);
  } catch (const kvzch::Error& e) {
    std::fprintf(stderr, "predictor_demo: %s\n", e.what());
    return 1;
  }
}
