// The bad-input matrix (issue 4): every exported function of kvzch.h, called
// the ways a buggy or stale host calls it. Every failing case checks
//   - the exact status;
//   - a last error that starts with the function's name and names the
//     argument (and its value, where it has one);
//   - that no out-param was written: everything the call could write is
//     pre-filled with a sentinel and compared byte for byte afterwards;
//   - that the cache did not change: the rows it holds, every field of its
//     info, its cumulative counters, its current read_hit_rate window (not
//     reset, not added to), and that no sink saw a batch;
//   - that the message survives a later successful call.
// Edges that must succeed are at the end: a 1.0 struct followed by garbage,
// a struct larger than the library's, adjacent buffers, and buffers that end
// where an inaccessible page begins. Built twice, against libkvzch.so and
// libkvzch.a. Calls on a destroyed handle are undefined by the ABI and not
// tried.
#include "kvzch.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "test_util.h"

using kvzch_test::CachePtr;
using kvzch_test::last_error;
using kvzch_test::make_cache;
using kvzch_test::options;
using kvzch_test::row_equals;
using kvzch_test::rows_for;

namespace {

constexpr uint32_t kRowBytes = 16;
constexpr uint32_t kStoredVersion = 1;  // what every cache under test holds
constexpr uint32_t kNewVersion = 2;     // what the rejected publishes carry
constexpr uint32_t kStoredTimestamp = 100;  // the rejected publishes carry 5
constexpr int64_t kAbsent = 77;
const std::vector<int64_t> kStored = {1, -2, INT64_MAX, INT64_MIN};
// The ids of every bad batch: two stored, one not, so that a call that went
// ahead anyway would overwrite, insert, remove or count something.
const std::vector<int64_t> kBatch = {1, -2, kAbsent};
constexpr size_t kN = 3;
constexpr size_t kBatchRowsLen = kN * kRowBytes;
const char kTable[] = "bad_input";
constexpr unsigned char kSentinel = 0xA5;
// No case uses this major, so its message cannot pass for a case's own.
constexpr uint32_t kMarkerMajor = 0xBAD;

std::string str(unsigned long long value) { return std::to_string(value); }

// A sink given to registrations that fail: it must never run, nor its
// release (1.3) be called.
uint64_t g_stray_calls = 0;
void stray_sink(void*, const kvzch_batch_event*) { ++g_stray_calls; }
uint64_t g_stray_releases = 0;
void stray_release(void*) { ++g_stray_releases; }

struct Tally {
  uint64_t calls = 0;
};

// A global sink sees every cache's batches; only the cache under test counts.
void tally_sink(void* user_data, const kvzch_batch_event* event) {
  if (std::strcmp(event->table, kTable) == 0) ++static_cast<Tally*>(user_data)->calls;
}

// Everything a call could write, filled with kSentinel before it. The
// structs a host extends are followed by room for a newer host's tail.
struct Outs {
  alignas(16) unsigned char buf[512];
  alignas(8) uint8_t mask[64];
  kvzch_batch_stats stats;
  kvzch_read_stats read_stats;
  struct {
    kvzch_cache_info info;
    unsigned char tail[32];
  } info;
  struct {
    kvzch_options opts;
    unsigned char tail[32];
  } opts;
  struct {
    kvzch_api_v1 api;
    unsigned char tail[32];
  } api;
  uint64_t u64;
  kvzch_cache* cache;
};

std::string first_difference(const unsigned char* before, const Outs& after) {
  static const struct {
    const char* name;
    size_t offset;
    size_t size;
  } regions[] = {
      {"buf", offsetof(Outs, buf), sizeof(Outs::buf)},
      {"mask", offsetof(Outs, mask), sizeof(Outs::mask)},
      {"stats", offsetof(Outs, stats), sizeof(Outs::stats)},
      {"read_stats", offsetof(Outs, read_stats), sizeof(Outs::read_stats)},
      {"info", offsetof(Outs, info), sizeof(Outs::info)},
      {"opts", offsetof(Outs, opts), sizeof(Outs::opts)},
      {"api", offsetof(Outs, api), sizeof(Outs::api)},
      {"u64", offsetof(Outs, u64), sizeof(Outs::u64)},
      {"cache", offsetof(Outs, cache), sizeof(Outs::cache)},
  };
  const unsigned char* now = reinterpret_cast<const unsigned char*>(&after);
  for (const auto& r : regions) {
    for (size_t i = 0; i < r.size; ++i) {
      if (now[r.offset + i] != before[r.offset + i]) {
        return std::string("wrote ") + r.name + " at byte " + str(i);
      }
    }
  }
  return {};
}

template <class T>
T* misaligned(Outs& o, size_t offset) {
  return reinterpret_cast<T*>(o.buf + offset + 1);
}

enum class Limit {
  kNone,
  kFull,  // max_rows == the rows stored, no eviction policy
};

struct Baseline {
  kvzch_cache_info info;
  kvzch_read_stats cumulative;
  uint64_t cache_sink_calls;
  uint64_t global_sink_calls;
};

// A cache holding kStored at kStoredVersion, watched by a cache sink and a
// global sink, plus whatever a case's preparation adds.
class World {
 public:
  World() = default;
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  ~World() {
    if (global_sink_id != 0) {
      EXPECT_EQ(kvzch_unregister_global_stat_sink(global_sink_id), KVZCH_STATUS_OK)
          << "the World's global sink was unregistered by a rejected call";
    }
    if (other != nullptr) {
      EXPECT_EQ(kvzch_cache_unregister_stat_sink(other.get(), other_sink_id), KVZCH_STATUS_OK)
          << "another cache's sink was unregistered by a rejected call";
    }
  }

  void init(Limit limit) {
    kvzch_options opts = options(kRowBytes, KVZCH_MISS_ZERO_FILL, kTable);
    opts.num_shards = 4;
    if (limit == Limit::kFull) opts.max_rows = kStored.size();
    cache = make_cache(opts);
    ASSERT_NE(cache, nullptr) << last_error();
    const std::vector<uint8_t> stored = rows_for(kStored, kRowBytes, kStoredVersion);
    ASSERT_EQ(kvzch_cache_batch_set(cache.get(), kStored.data(), kStored.size(), stored.data(),
                                    stored.size(), kStoredTimestamp),
              KVZCH_STATUS_OK)
        << last_error();
    ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), tally_sink, &cache_tally, &cache_sink_id),
              KVZCH_STATUS_OK);
    ASSERT_EQ(kvzch_register_global_stat_sink(tally_sink, &global_tally, &global_sink_id),
              KVZCH_STATUS_OK);
    rows = rows_for(kBatch, kRowBytes, kNewVersion);
  }

  // A second cache with a sink of its own, for ids that belong elsewhere.
  void add_other_cache() {
    other = make_cache(options(kRowBytes, KVZCH_MISS_ZERO_FILL, "other"));
    ASSERT_NE(other, nullptr) << last_error();
    ASSERT_EQ(kvzch_cache_register_stat_sink(other.get(), stray_sink, nullptr, &other_sink_id),
              KVZCH_STATUS_OK);
  }

  // Starts a window that holds exactly one batch (1 hit, 1 miss), so that a
  // rejected call that reset the window, or was counted in it, shows.
  void prime() {
    kvzch_read_stats drained{};
    ASSERT_EQ(kvzch_cache_get_read_hit_rate_stats(cache.get(), &drained), KVZCH_STATUS_OK);
    const int64_t ids[] = {kStored[0], kAbsent};
    uint8_t out[2 * kRowBytes];
    ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 2, out, sizeof out, nullptr, nullptr),
              KVZCH_STATUS_OK);
  }

  kvzch_cache_info info() const {
    kvzch_cache_info i;
    std::memset(&i, 0, sizeof i);
    i.struct_size = sizeof i;
    EXPECT_EQ(kvzch_cache_get_info(cache.get(), &i), KVZCH_STATUS_OK);
    return i;
  }

  kvzch_read_stats cumulative() const {
    kvzch_read_stats s{};
    EXPECT_EQ(kvzch_cache_get_cumulative_read_stats(cache.get(), &s), KVZCH_STATUS_OK);
    return s;
  }

  Baseline baseline() const {
    return {info(), cumulative(), cache_tally.calls, global_tally.calls};
  }

  void expect_unchanged(const Baseline& before) {
    kvzch_read_stats window{};
    ASSERT_EQ(kvzch_cache_get_read_hit_rate_stats(cache.get(), &window), KVZCH_STATUS_OK);
    EXPECT_EQ(window.hits, 1u) << "the window was reset or counted the rejected call";
    EXPECT_EQ(window.misses, 1u) << "the window was reset or counted the rejected call";
    EXPECT_EQ(window.total, 2u) << "the window was reset or counted the rejected call";

    const kvzch_read_stats cumulative_now = cumulative();
    EXPECT_EQ(cumulative_now.hits, before.cumulative.hits);
    EXPECT_EQ(cumulative_now.misses, before.cumulative.misses);
    EXPECT_EQ(cumulative_now.total, before.cumulative.total);

    const kvzch_cache_info now = info();
    EXPECT_EQ(now.rows, before.info.rows);
    EXPECT_EQ(now.memory_bytes, before.info.memory_bytes);
    EXPECT_EQ(now.inserts, before.info.inserts);
    EXPECT_EQ(now.updates, before.info.updates);
    EXPECT_EQ(now.removals, before.info.removals);
    EXPECT_EQ(now.expirations, before.info.expirations);
    EXPECT_EQ(now.capacity_evictions, before.info.capacity_evictions);
    EXPECT_EQ(std::memcmp(&now, &before.info, sizeof now), 0) << "info changed";

    EXPECT_EQ(cache_tally.calls, before.cache_sink_calls) << "a sink saw the rejected call";
    EXPECT_EQ(global_tally.calls, before.global_sink_calls)
        << "a global sink saw the rejected call";

    std::vector<int64_t> query = kStored;
    query.push_back(kAbsent);
    std::vector<uint8_t> out(query.size() * kRowBytes);
    std::vector<uint8_t> mask(query.size());
    ASSERT_EQ(kvzch_cache_batch_get(cache.get(), query.data(), query.size(), out.data(), out.size(),
                                    mask.data(), nullptr),
              KVZCH_STATUS_OK);
    for (size_t i = 0; i < kStored.size(); ++i) {
      EXPECT_EQ(mask[i], 1) << "id " << query[i] << " is gone";
      EXPECT_TRUE(row_equals(out.data() + i * kRowBytes, kRowBytes, query[i], kStoredVersion))
          << "id " << query[i] << " was overwritten";
    }
    EXPECT_EQ(mask[kStored.size()], 0) << "id " << kAbsent << " was stored";

    // The lookup reached the World's own sinks, so no rejected call
    // unregistered them, and registered nothing that runs.
    EXPECT_EQ(cache_tally.calls, before.cache_sink_calls + 1) << "the cache's sink is gone";
    EXPECT_EQ(global_tally.calls, before.global_sink_calls + 1) << "the global sink is gone";
    EXPECT_EQ(g_stray_calls, 0u) << "a failed registration left a sink behind";
    EXPECT_EQ(g_stray_releases, 0u) << "a failed registration released its user_data";

    // No row was restamped: every one still carries the stored timestamp.
    // Last, since the second eviction empties the cache.
    uint64_t expired = 0;
    ASSERT_EQ(kvzch_cache_evict_older_than(cache.get(), kStoredTimestamp, &expired),
              KVZCH_STATUS_OK);
    EXPECT_EQ(expired, 0u) << "the rejected call restamped rows";
    ASSERT_EQ(kvzch_cache_evict_older_than(cache.get(), kStoredTimestamp + 1, &expired),
              KVZCH_STATUS_OK);
    EXPECT_EQ(expired, kStored.size()) << "the rejected call restamped rows";
  }

  CachePtr cache;
  CachePtr other;
  std::vector<uint8_t> rows;  // kBatch at kNewVersion
  Tally cache_tally;
  Tally global_tally;
  uint64_t cache_sink_id = 0;
  uint64_t global_sink_id = 0;
  uint64_t other_sink_id = 0;
  uint64_t removed_sink_id = 0;
  // What a case's preparation adds to its mentions (ids known only then).
  std::vector<std::string> mentions;
};

struct Case {
  std::string name;
  const char* function;
  kvzch_status expected;
  std::vector<std::string> mentions;  // substrings of the last error
  std::function<kvzch_status(World&, Outs&)> call;
  std::function<void(World&, Outs&)> prepare = nullptr;  // state the call needs
  Limit limit = Limit::kNone;
};

void run_case(const Case& c) {
  SCOPED_TRACE(c.name);
  g_stray_calls = 0;
  g_stray_releases = 0;
  World w;
  w.init(c.limit);
  if (::testing::Test::HasFatalFailure()) return;
  Outs o;
  std::memset(&o, kSentinel, sizeof o);
  if (c.prepare) c.prepare(w, o);
  if (::testing::Test::HasFatalFailure()) return;
  w.prime();
  if (::testing::Test::HasFatalFailure()) return;
  const Baseline before = w.baseline();
  std::vector<unsigned char> outs_before(sizeof o);
  std::memcpy(outs_before.data(), &o, sizeof o);

  ASSERT_EQ(kvzch_get_api(kMarkerMajor, nullptr, 0), KVZCH_STATUS_UNSUPPORTED);
  const std::string marker = last_error();
  const kvzch_status status = c.call(w, o);
  const std::string message = last_error();

  EXPECT_EQ(status, c.expected) << "got " << kvzch_status_name(status) << ", expected "
                                << kvzch_status_name(c.expected) << "; message: " << message;
  EXPECT_NE(message, marker) << "the call recorded no message";
  EXPECT_EQ(message.rfind(std::string(c.function) + ": ", 0), 0u)
      << "the message does not start with the function: " << message;
  std::vector<std::string> mentions = c.mentions;
  mentions.insert(mentions.end(), w.mentions.begin(), w.mentions.end());
  for (const std::string& m : mentions) {
    EXPECT_NE(message.find(m), std::string::npos) << "no \"" << m << "\" in: " << message;
  }
  EXPECT_EQ(first_difference(outs_before.data(), o), "");

  w.expect_unchanged(before);
  EXPECT_EQ(last_error(), message) << "a successful call replaced the message";
}

void run_cases(const std::vector<Case>& cases) {
  for (const Case& c : cases) run_case(c);
}

// ------------------------------------------------------------- cache_create

struct OptionsCase {
  std::string name;
  kvzch_status expected;
  std::vector<std::string> mentions;
  std::function<void(kvzch_options&)> mutate;
};

void valid_options(World&, Outs& o) {
  std::memset(&o.opts, 0, sizeof o.opts);
  kvzch_options_init(&o.opts.opts);
  o.opts.opts.row_bytes = kRowBytes;
}

TEST(BadInput, CacheCreateOptions) {
  static const std::string name_65(65, 'a');
  static const std::string name_4096(4096, 'a');
  const std::vector<OptionsCase> options_cases = {
      {"struct_size 0", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->struct_size 0", "40"},
       [](kvzch_options& x) { x.struct_size = 0; }},
      {"struct_size 1", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->struct_size 1 "},
       [](kvzch_options& x) { x.struct_size = 1; }},
      {"struct_size 39, one byte short of 1.0", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts->struct_size 39"}, [](kvzch_options& x) { x.struct_size = 39; }},
      // Read as a size, neither is: nothing past the struct may be read.
      {"struct_size 4097, past a page", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts->struct_size 4097 ", "4096", "kvzch_options_init"},
       [](kvzch_options& x) { x.struct_size = 4097; }},
      {"struct_size UINT32_MAX, never set", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts->struct_size 4294967295 "}, [](kvzch_options& x) { x.struct_size = UINT32_MAX; }},
      {"row_bytes 0", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->row_bytes 0"},
       [](kvzch_options& x) { x.row_bytes = 0; }},
      {"row_bytes 65537", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->row_bytes 65537"},
       [](kvzch_options& x) { x.row_bytes = 65537; }},
      {"row_bytes UINT32_MAX", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->row_bytes 4294967295"},
       [](kvzch_options& x) { x.row_bytes = UINT32_MAX; }},
      {"num_shards 65537", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->num_shards 65537"},
       [](kvzch_options& x) { x.num_shards = 65537; }},
      {"num_shards UINT32_MAX", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->num_shards 4294967295"},
       [](kvzch_options& x) { x.num_shards = UINT32_MAX; }},
      {"miss_policy 2", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->miss_policy 2"},
       [](kvzch_options& x) { x.miss_policy = 2; }},
      {"miss_policy UINT32_MAX", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->miss_policy 4294967295"},
       [](kvzch_options& x) { x.miss_policy = UINT32_MAX; }},
      {"eviction_policy 3", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->eviction_policy 3"},
       [](kvzch_options& x) { x.eviction_policy = 3; }},
      {"eviction_policy UINT32_MAX", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts->eviction_policy 4294967295"},
       [](kvzch_options& x) { x.eviction_policy = UINT32_MAX; }},
      {"reserved1 1", KVZCH_STATUS_UNSUPPORTED, {"opts->reserved1 is 1,"},
       [](kvzch_options& x) { x.reserved1 = 1; }},
      {"reserved1 high bit", KVZCH_STATUS_UNSUPPORTED, {"opts->reserved1 is 2147483648"},
       [](kvzch_options& x) { x.reserved1 = 0x80000000u; }},
      {"empty name", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name \"\""},
       [](kvzch_options& x) { x.name = ""; }},
      {"65-byte name", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name", "64"},
       [](kvzch_options& x) { x.name = name_65.c_str(); }},
      {"4096-byte name", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name", "64"},
       [](kvzch_options& x) { x.name = name_4096.c_str(); }},
      {"name with a space", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name \"a b\""},
       [](kvzch_options& x) { x.name = "a b"; }},
      {"name with a slash", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name \"a/b\""},
       [](kvzch_options& x) { x.name = "a/b"; }},
      {"name with a newline", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name"},
       [](kvzch_options& x) { x.name = "a\nb"; }},
      {"name with a non-ASCII letter", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name"},
       [](kvzch_options& x) { x.name = "caf\xc3\xa9"; }},
      {"name that is not UTF-8", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name", "UTF-8"},
       [](kvzch_options& x) { x.name = "ab\xff\xfe"; }},
      {"name cut inside a UTF-8 sequence", KVZCH_STATUS_INVALID_ARGUMENT, {"opts->name", "UTF-8"},
       [](kvzch_options& x) { x.name = "ab\xc3"; }},
      {"max_memory_bytes 1, below an empty cache", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts->max_memory_bytes 1 "}, [](kvzch_options& x) { x.max_memory_bytes = 1; }},
  };

  std::vector<Case> cases;
  for (const OptionsCase& oc : options_cases) {
    cases.push_back({oc.name, "kvzch_cache_create", oc.expected,
                     oc.mentions,
                     [](World&, Outs& o) { return kvzch_cache_create(&o.opts.opts, &o.cache); },
                     [mutate = oc.mutate](World& w, Outs& o) {
                       valid_options(w, o);
                       mutate(o.opts.opts);
                     }});
  }
  run_cases(cases);
}

TEST(BadInput, CacheCreatePointersAndSizes) {
  run_cases({
      {"opts NULL", "kvzch_cache_create", KVZCH_STATUS_NULL_ARGUMENT, {"opts is NULL"},
       [](World&, Outs& o) { return kvzch_cache_create(nullptr, &o.cache); }},
      {"out NULL", "kvzch_cache_create", KVZCH_STATUS_NULL_ARGUMENT, {"out is NULL"},
       [](World&, Outs& o) { return kvzch_cache_create(&o.opts.opts, nullptr); }, valid_options},
      {"opts misaligned", "kvzch_cache_create", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts ", "not aligned"},
       [](World&, Outs& o) {
         return kvzch_cache_create(misaligned<const kvzch_options>(o, 0), &o.cache);
       },
       [](World& w, Outs& o) {
         valid_options(w, o);
         std::memcpy(o.buf + 1, &o.opts.opts, sizeof o.opts.opts);
       }},
      {"out misaligned", "kvzch_cache_create", KVZCH_STATUS_INVALID_ARGUMENT,
       {"out ", "not aligned"},
       [](World&, Outs& o) {
         return kvzch_cache_create(&o.opts.opts, misaligned<kvzch_cache*>(o, 0));
       },
       valid_options},
      // A newer host's larger struct: the bytes past ours are options this
      // library does not have, and must not be ignored.
      {"struct_size past ours with a non-zero tail", "kvzch_cache_create",
       KVZCH_STATUS_UNSUPPORTED, {"opts sets byte " + str(sizeof(kvzch_options) + 7)},
       [](World&, Outs& o) { return kvzch_cache_create(&o.opts.opts, &o.cache); },
       [](World& w, Outs& o) {
         valid_options(w, o);
         o.opts.opts.struct_size = sizeof o.opts.opts + 8;
         o.opts.tail[7] = 1;
       }},
      {"struct_size far past ours with a non-zero tail", "kvzch_cache_create",
       KVZCH_STATUS_UNSUPPORTED, {"opts sets byte " + str(sizeof(kvzch_options))},
       [](World&, Outs& o) { return kvzch_cache_create(&o.opts.opts, &o.cache); },
       [](World& w, Outs& o) {
         valid_options(w, o);
         o.opts.opts.struct_size = sizeof o.opts;
         std::memset(o.opts.tail, 0xFF, sizeof o.opts.tail);
       }},
  });
}

TEST(BadInput, OptionsInitSized) {
  run_cases({
      {"opts NULL", "kvzch_options_init_sized", KVZCH_STATUS_NULL_ARGUMENT, {"opts is NULL"},
       [](World&, Outs&) { return kvzch_options_init_sized(nullptr, sizeof(kvzch_options)); }},
      {"size 0", "kvzch_options_init_sized", KVZCH_STATUS_INVALID_ARGUMENT, {"size 0 ", "40"},
       [](World&, Outs& o) { return kvzch_options_init_sized(&o.opts.opts, 0); }},
      {"size 39, one byte short of 1.0", "kvzch_options_init_sized",
       KVZCH_STATUS_INVALID_ARGUMENT, {"size 39 "},
       [](World&, Outs& o) { return kvzch_options_init_sized(&o.opts.opts, 39); }},
      {"opts misaligned", "kvzch_options_init_sized", KVZCH_STATUS_INVALID_ARGUMENT,
       {"opts ", "not aligned"},
       [](World&, Outs& o) {
         return kvzch_options_init_sized(misaligned<kvzch_options>(o, 0), sizeof(kvzch_options));
       }},
  });
}

// ------------------------------------------------------------- batch_set

// SIZE_MAX / row_bytes + 2 rows wrap n * row_bytes around to a small number,
// which a naive check would find covered by the buffer.
constexpr size_t kWrappingN = SIZE_MAX / kRowBytes + 2;
static_assert(kWrappingN * kRowBytes <= kBatchRowsLen, "the product must wrap below the buffer");
// The most rows whose byte count does not overflow: only rows_len can refuse it.
constexpr size_t kHugeN = SIZE_MAX / kRowBytes;

TEST(BadInput, BatchSet) {
  const char* f = "kvzch_cache_batch_set";
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(nullptr, kBatch.data(), kN, w.rows.data(), kBatchRowsLen, 5);
       }},
      {"cache NULL with n 0", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs&) { return kvzch_cache_batch_set(nullptr, nullptr, 0, nullptr, 0, 5); }},
      {"ids NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"ids is NULL"},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), nullptr, kN, w.rows.data(), kBatchRowsLen, 5);
       }},
      {"rows NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"rows is NULL"},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), kN, nullptr, kBatchRowsLen, 5);
       }},
      {"rows_len one byte short", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"rows_len " + str(kBatchRowsLen - 1), str(kBatchRowsLen)},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), kN, w.rows.data(),
                                      kBatchRowsLen - 1, 5);
       }},
      {"rows_len 0", f, KVZCH_STATUS_INVALID_ARGUMENT, {"rows_len 0 "},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), kN, w.rows.data(), 0, 5);
       }},
      {"n * row_bytes wraps around size_t", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"n " + str(kWrappingN), "overflows"},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), kWrappingN, w.rows.data(),
                                      kBatchRowsLen, 5);
       }},
      {"n SIZE_MAX", f, KVZCH_STATUS_INVALID_ARGUMENT, {"n " + str(SIZE_MAX), "overflows"},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), SIZE_MAX, w.rows.data(),
                                      SIZE_MAX, 5);
       }},
      {"huge n, the product fits, the buffer does not", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"rows_len " + str(kBatchRowsLen), str(kHugeN * kRowBytes)},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), kHugeN, w.rows.data(),
                                      kBatchRowsLen, 5);
       }},
      {"ids misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"ids ", "not aligned"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_set(w.cache.get(), misaligned<const int64_t>(o, 0), kN,
                                      w.rows.data(), kBatchRowsLen, 5);
       },
       [](World&, Outs& o) { std::memcpy(o.buf + 1, kBatch.data(), kN * sizeof(int64_t)); }},
      // Two overwrites and one new id into a full cache: nothing may be
      // written, the overwrites included.
      {"no room for a new id", f, KVZCH_STATUS_CAPACITY_EXCEEDED, {"max_rows 4"},
       [](World& w, Outs&) {
         return kvzch_cache_batch_set(w.cache.get(), kBatch.data(), kN, w.rows.data(),
                                      kBatchRowsLen, 5);
       },
       nullptr, Limit::kFull},
  });
}

// ------------------------------------------------------------- batch_get

kvzch_status get_into(World& w, const int64_t* ids, void* out, uint8_t* mask,
                      kvzch_batch_stats* stats) {
  return kvzch_cache_batch_get(w.cache.get(), ids, kN, out, kBatchRowsLen, mask, stats);
}

void ids_in_buf(World&, Outs& o) { std::memcpy(o.buf, kBatch.data(), kN * sizeof(int64_t)); }

const int64_t* buf_ids(Outs& o) { return reinterpret_cast<const int64_t*>(o.buf); }

TEST(BadInput, BatchGet) {
  const char* f = "kvzch_cache_batch_get";
  const kvzch_status inval = KVZCH_STATUS_INVALID_ARGUMENT;
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs& o) {
         return kvzch_cache_batch_get(nullptr, kBatch.data(), kN, o.buf, kBatchRowsLen, o.mask,
                                      &o.stats);
       }},
      {"cache NULL with n 0", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs& o) {
         return kvzch_cache_batch_get(nullptr, nullptr, 0, nullptr, 0, nullptr, &o.stats);
       }},
      {"ids NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"ids is NULL"},
       [](World& w, Outs& o) { return get_into(w, nullptr, o.buf, o.mask, &o.stats); }},
      {"out NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out is NULL"},
       [](World& w, Outs& o) { return get_into(w, kBatch.data(), nullptr, o.mask, &o.stats); }},
      {"out_len one byte short", f, inval,
       {"out_len " + str(kBatchRowsLen - 1), str(kBatchRowsLen)},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_get(w.cache.get(), kBatch.data(), kN, o.buf, kBatchRowsLen - 1,
                                      o.mask, &o.stats);
       }},
      {"out_len 0", f, inval, {"out_len 0 "},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_get(w.cache.get(), kBatch.data(), kN, o.buf, 0, o.mask,
                                      &o.stats);
       }},
      {"n * row_bytes wraps around size_t", f, inval, {"n " + str(kWrappingN), "overflows"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_get(w.cache.get(), kBatch.data(), kWrappingN, o.buf,
                                      sizeof o.buf, o.mask, &o.stats);
       }},
      {"n SIZE_MAX", f, inval, {"n " + str(SIZE_MAX), "overflows"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_get(w.cache.get(), kBatch.data(), SIZE_MAX, o.buf, SIZE_MAX,
                                      o.mask, &o.stats);
       }},
      {"huge n, the product fits, the buffer does not", f, inval,
       {"out_len " + str(sizeof(Outs::buf)), str(kHugeN * kRowBytes)},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_get(w.cache.get(), kBatch.data(), kHugeN, o.buf, sizeof o.buf,
                                      o.mask, &o.stats);
       }},
      // Overlapping buffers, every pair: the library writes out, hit_mask
      // and stats while it reads ids.
      {"out overlaps ids", f, inval, {"ids and out overlap"},
       [](World& w, Outs& o) { return get_into(w, buf_ids(o), o.buf + 16, o.mask, &o.stats); },
       ids_in_buf},
      {"out is ids (in place)", f, inval, {"ids and out overlap"},
       [](World& w, Outs& o) { return get_into(w, buf_ids(o), o.buf, o.mask, &o.stats); },
       ids_in_buf},
      {"hit_mask overlaps ids", f, inval, {"ids and hit_mask overlap"},
       [](World& w, Outs& o) {
         return get_into(w, buf_ids(o), o.buf + 256, o.buf + kN * sizeof(int64_t) - 1, &o.stats);
       },
       ids_in_buf},
      {"stats overlaps ids", f, inval, {"ids and stats overlap"},
       [](World& w, Outs& o) {
         return get_into(w, buf_ids(o), o.buf + 256, o.mask,
                         reinterpret_cast<kvzch_batch_stats*>(o.buf + 16));
       },
       ids_in_buf},
      {"hit_mask overlaps out's last byte", f, inval, {"out and hit_mask overlap"},
       [](World& w, Outs& o) {
         return get_into(w, kBatch.data(), o.buf, o.buf + kBatchRowsLen - 1, &o.stats);
       }},
      {"stats overlaps out", f, inval, {"out and stats overlap"},
       [](World& w, Outs& o) {
         return get_into(w, kBatch.data(), o.buf, o.mask,
                         reinterpret_cast<kvzch_batch_stats*>(o.buf + 40));
       }},
      {"stats overlaps hit_mask", f, inval, {"hit_mask and stats overlap"},
       [](World& w, Outs& o) {
         return get_into(w, kBatch.data(), o.buf, o.mask,
                         reinterpret_cast<kvzch_batch_stats*>(o.mask));
       }},
      {"ids misaligned", f, inval, {"ids ", "not aligned"},
       [](World& w, Outs& o) {
         return get_into(w, misaligned<const int64_t>(o, 0), o.buf + 256, o.mask, &o.stats);
       },
       [](World&, Outs& o) { std::memcpy(o.buf + 1, kBatch.data(), kN * sizeof(int64_t)); }},
      {"stats misaligned", f, inval, {"stats ", "not aligned"},
       [](World& w, Outs& o) {
         return get_into(w, kBatch.data(), o.buf, o.mask, misaligned<kvzch_batch_stats>(o, 256));
       }},
  });
}

// ------------------------------------------------------------- remove, evict, compact, reserve

TEST(BadInput, BatchRemove) {
  const char* f = "kvzch_cache_batch_remove";
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs& o) {
         return kvzch_cache_batch_remove(nullptr, kBatch.data(), kN, &o.u64);
       }},
      {"cache NULL with n 0", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs& o) { return kvzch_cache_batch_remove(nullptr, nullptr, 0, &o.u64); }},
      {"ids NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"ids is NULL"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_remove(w.cache.get(), nullptr, kN, &o.u64);
       }},
      // No buffer of that many ids can exist, whatever the host claims.
      {"n SIZE_MAX", f, KVZCH_STATUS_INVALID_ARGUMENT, {"ids of " + str(SIZE_MAX) + " elements"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_remove(w.cache.get(), kBatch.data(), SIZE_MAX, &o.u64);
       }},
      {"n * 8 wraps around size_t", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"ids of " + str(SIZE_MAX / 8 + 1) + " elements"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_remove(w.cache.get(), kBatch.data(), SIZE_MAX / 8 + 1, &o.u64);
       }},
      {"ids misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"ids ", "not aligned"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_remove(w.cache.get(), misaligned<const int64_t>(o, 0), kN,
                                         &o.u64);
       },
       [](World&, Outs& o) { std::memcpy(o.buf + 1, kBatch.data(), kN * sizeof(int64_t)); }},
      {"out_removed misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out_removed ", "not aligned"},
       [](World& w, Outs& o) {
         return kvzch_cache_batch_remove(w.cache.get(), kBatch.data(), kN,
                                         misaligned<uint64_t>(o, 0));
       }},
      // The library writes out_removed while it reads ids: here the last id.
      {"out_removed overlaps ids", f, KVZCH_STATUS_INVALID_ARGUMENT, {"ids and out_removed overlap"},
       [](World& w, Outs& o) {
         auto* last_id = reinterpret_cast<uint64_t*>(o.buf + (kN - 1) * sizeof(int64_t));
         return kvzch_cache_batch_remove(w.cache.get(), buf_ids(o), kN, last_id);
       },
       ids_in_buf},
  });
}

TEST(BadInput, EvictOlderThanAndCompact) {
  run_cases({
      {"evict: cache NULL", "kvzch_cache_evict_older_than", KVZCH_STATUS_NULL_ARGUMENT,
       {"cache is NULL"},
       [](World&, Outs& o) { return kvzch_cache_evict_older_than(nullptr, UINT32_MAX, &o.u64); }},
      // A threshold that would evict every row, had the call gone ahead.
      {"evict: out_evicted misaligned", "kvzch_cache_evict_older_than",
       KVZCH_STATUS_INVALID_ARGUMENT, {"out_evicted ", "not aligned"},
       [](World& w, Outs& o) {
         return kvzch_cache_evict_older_than(w.cache.get(), UINT32_MAX, misaligned<uint64_t>(o, 0));
       }},
      {"compact: cache NULL", "kvzch_cache_compact", KVZCH_STATUS_NULL_ARGUMENT,
       {"cache is NULL"}, [](World&, Outs&) { return kvzch_cache_compact(nullptr); }},
  });
}

TEST(BadInput, Reserve) {
  const char* f = "kvzch_cache_reserve";
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs&) { return kvzch_cache_reserve(nullptr, 10); }},
      // More rows than any number of shards' 32-bit slots can address.
      {"additional_rows UINT64_MAX", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"additional_rows " + str(UINT64_MAX)},
       [](World& w, Outs&) { return kvzch_cache_reserve(w.cache.get(), UINT64_MAX); }},
      {"one row more than max_rows", f, KVZCH_STATUS_CAPACITY_EXCEEDED, {"max_rows 4"},
       [](World& w, Outs&) { return kvzch_cache_reserve(w.cache.get(), 1); }, nullptr,
       Limit::kFull},
  });
}

// ------------------------------------------------------------- info and counters

void info_sized(World&, Outs& o) { o.info.info.struct_size = sizeof o.info.info; }

TEST(BadInput, GetInfo) {
  const char* f = "kvzch_cache_get_info";
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs& o) { return kvzch_cache_get_info(nullptr, &o.info.info); }, info_sized},
      {"out NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out is NULL"},
       [](World& w, Outs&) { return kvzch_cache_get_info(w.cache.get(), nullptr); }},
      {"struct_size 0", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out->struct_size 0 ", "32"},
       [](World& w, Outs& o) { return kvzch_cache_get_info(w.cache.get(), &o.info.info); },
       [](World&, Outs& o) { o.info.info.struct_size = 0; }},
      {"struct_size 31, one byte short of 1.0", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"out->struct_size 31 "},
       [](World& w, Outs& o) { return kvzch_cache_get_info(w.cache.get(), &o.info.info); },
       [](World&, Outs& o) { o.info.info.struct_size = 31; }},
      {"out misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out ", "not aligned"},
       [](World& w, Outs& o) {
         return kvzch_cache_get_info(w.cache.get(), misaligned<kvzch_cache_info>(o, 0));
       },
       [](World&, Outs& o) {
         const uint32_t size = sizeof(kvzch_cache_info);
         std::memcpy(o.buf + 1, &size, sizeof size);
       }},
  });
}

std::vector<Case> read_stats_cases(
    const char* f, kvzch_status (*get)(kvzch_cache*, kvzch_read_stats*)) {
  return {
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [get](World&, Outs& o) { return get(nullptr, &o.read_stats); }},
      {"out NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out is NULL"},
       [get](World& w, Outs&) { return get(w.cache.get(), nullptr); }},
      {"out misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT,
       {"out ", "not aligned"},
       [get](World& w, Outs& o) { return get(w.cache.get(), misaligned<kvzch_read_stats>(o, 0)); }},
  };
}

// A rejected window read must not start a new window: World checks that the
// primed batch is still in it.
TEST(BadInput, ReadHitRateStats) {
  run_cases(read_stats_cases("kvzch_cache_get_read_hit_rate_stats",
                             kvzch_cache_get_read_hit_rate_stats));
}

TEST(BadInput, CumulativeReadStats) {
  run_cases(read_stats_cases("kvzch_cache_get_cumulative_read_stats",
                             [](kvzch_cache* cache, kvzch_read_stats* out) {
                               return kvzch_cache_get_cumulative_read_stats(cache, out);
                             }));
}

// ------------------------------------------------------------- sinks

TEST(BadInput, RegisterCacheSink) {
  const char* f = "kvzch_cache_register_stat_sink";
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World&, Outs& o) {
         return kvzch_cache_register_stat_sink(nullptr, stray_sink, nullptr, &o.u64);
       }},
      {"fn NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"fn is NULL"},
       [](World& w, Outs& o) {
         return kvzch_cache_register_stat_sink(w.cache.get(), nullptr, nullptr, &o.u64);
       }},
      {"out_id NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out_id is NULL"},
       [](World& w, Outs&) {
         return kvzch_cache_register_stat_sink(w.cache.get(), stray_sink, nullptr, nullptr);
       }},
      {"out_id misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out_id ", "not aligned"},
       [](World& w, Outs& o) {
         return kvzch_cache_register_stat_sink(w.cache.get(), stray_sink, nullptr,
                                               misaligned<uint64_t>(o, 0));
       }},
  });
}

void remove_a_cache_sink(World& w, Outs&) {
  ASSERT_EQ(kvzch_cache_register_stat_sink(w.cache.get(), stray_sink, nullptr, &w.removed_sink_id),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_cache_unregister_stat_sink(w.cache.get(), w.removed_sink_id), KVZCH_STATUS_OK);
  w.mentions.push_back("sink id " + str(w.removed_sink_id) + " ");
}

void remove_a_global_sink(World& w, Outs&) {
  ASSERT_EQ(kvzch_register_global_stat_sink(stray_sink, nullptr, &w.removed_sink_id),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_unregister_global_stat_sink(w.removed_sink_id), KVZCH_STATUS_OK);
  w.mentions.push_back("sink id " + str(w.removed_sink_id) + " ");
}

TEST(BadInput, UnregisterCacheSink) {
  const char* f = "kvzch_cache_unregister_stat_sink";
  const kvzch_status not_found = KVZCH_STATUS_NOT_FOUND;
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [](World& w, Outs&) { return kvzch_cache_unregister_stat_sink(nullptr, w.cache_sink_id); }},
      {"id 0", f, not_found, {"sink id 0 "},
       [](World& w, Outs&) { return kvzch_cache_unregister_stat_sink(w.cache.get(), 0); }},
      {"id UINT64_MAX", f, not_found, {"sink id " + str(UINT64_MAX)},
       [](World& w, Outs&) { return kvzch_cache_unregister_stat_sink(w.cache.get(), UINT64_MAX); }},
      {"an id already unregistered", f, not_found, {},
       [](World& w, Outs&) {
         return kvzch_cache_unregister_stat_sink(w.cache.get(), w.removed_sink_id);
       },
       remove_a_cache_sink},
      {"a global sink's id", f, not_found, {},
       [](World& w, Outs&) {
         return kvzch_cache_unregister_stat_sink(w.cache.get(), w.global_sink_id);
       },
       [](World& w, Outs&) { w.mentions.push_back("sink id " + str(w.global_sink_id) + " "); }},
      {"another cache's sink id", f, not_found, {},
       [](World& w, Outs&) {
         return kvzch_cache_unregister_stat_sink(w.cache.get(), w.other_sink_id);
       },
       [](World& w, Outs&) {
         w.add_other_cache();
         w.mentions.push_back("sink id " + str(w.other_sink_id) + " ");
       }},
  });
}

TEST(BadInput, RegisterGlobalSink) {
  const char* f = "kvzch_register_global_stat_sink";
  run_cases({
      {"fn NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"fn is NULL"},
       [](World&, Outs& o) { return kvzch_register_global_stat_sink(nullptr, nullptr, &o.u64); }},
      {"out_id NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out_id is NULL"},
       [](World&, Outs&) { return kvzch_register_global_stat_sink(stray_sink, nullptr, nullptr); }},
      {"out_id misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out_id ", "not aligned"},
       [](World&, Outs& o) {
         return kvzch_register_global_stat_sink(stray_sink, nullptr, misaligned<uint64_t>(o, 0));
       }},
  });
}

TEST(BadInput, RegisterCacheSinkWithRelease) {
  const char* f = "kvzch_cache_register_stat_sink_with_release";
  const auto reg = [](kvzch_cache* cache, kvzch_stat_sink_fn fn, uint64_t* out_id) {
    return kvzch_cache_register_stat_sink_with_release(cache, fn, nullptr, stray_release, out_id);
  };
  run_cases({
      {"cache NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"cache is NULL"},
       [reg](World&, Outs& o) { return reg(nullptr, stray_sink, &o.u64); }},
      {"fn NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"fn is NULL"},
       [reg](World& w, Outs& o) { return reg(w.cache.get(), nullptr, &o.u64); }},
      {"out_id NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out_id is NULL"},
       [reg](World& w, Outs&) { return reg(w.cache.get(), stray_sink, nullptr); }},
      {"out_id misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out_id ", "not aligned"},
       [reg](World& w, Outs& o) {
         return reg(w.cache.get(), stray_sink, misaligned<uint64_t>(o, 0));
       }},
  });
}

TEST(BadInput, RegisterGlobalSinkWithRelease) {
  const char* f = "kvzch_register_global_stat_sink_with_release";
  const auto reg = [](kvzch_stat_sink_fn fn, uint64_t* out_id) {
    return kvzch_register_global_stat_sink_with_release(fn, nullptr, stray_release, out_id);
  };
  run_cases({
      {"fn NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"fn is NULL"},
       [reg](World&, Outs& o) { return reg(nullptr, &o.u64); }},
      {"out_id NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"out_id is NULL"},
       [reg](World&, Outs&) { return reg(stray_sink, nullptr); }},
      {"out_id misaligned", f, KVZCH_STATUS_INVALID_ARGUMENT, {"out_id ", "not aligned"},
       [reg](World&, Outs& o) { return reg(stray_sink, misaligned<uint64_t>(o, 0)); }},
  });
}

TEST(BadInput, UnregisterGlobalSink) {
  const char* f = "kvzch_unregister_global_stat_sink";
  const kvzch_status not_found = KVZCH_STATUS_NOT_FOUND;
  run_cases({
      {"id 0", f, not_found, {"sink id 0 "},
       [](World&, Outs&) { return kvzch_unregister_global_stat_sink(0); }},
      {"id UINT64_MAX", f, not_found, {"sink id " + str(UINT64_MAX)},
       [](World&, Outs&) { return kvzch_unregister_global_stat_sink(UINT64_MAX); }},
      {"an id already unregistered", f, not_found, {},
       [](World& w, Outs&) { return kvzch_unregister_global_stat_sink(w.removed_sink_id); },
       remove_a_global_sink},
      {"a cache sink's id", f, not_found, {},
       [](World& w, Outs&) { return kvzch_unregister_global_stat_sink(w.cache_sink_id); },
       [](World& w, Outs&) { w.mentions.push_back("sink id " + str(w.cache_sink_id) + " "); }},
      {"another cache's sink id", f, not_found, {},
       [](World& w, Outs&) { return kvzch_unregister_global_stat_sink(w.other_sink_id); },
       [](World& w, Outs&) {
         w.add_other_cache();
         w.mentions.push_back("sink id " + str(w.other_sink_id) + " ");
       }},
  });
}

// ------------------------------------------------------------- plugin table

TEST(BadInput, GetApi) {
  const char* f = "kvzch_get_api";
  // The 1.0 table ends where the 1.1 entries begin.
  constexpr size_t v1_0_size = offsetof(kvzch_api_v1, cache_compact);
  const kvzch_status unsupported = KVZCH_STATUS_UNSUPPORTED;
  const kvzch_status inval = KVZCH_STATUS_INVALID_ARGUMENT;
  run_cases({
      {"abi_major 0", f, unsupported, {"abi_major 0:"},
       [](World&, Outs& o) { return kvzch_get_api(0, &o.api.api, sizeof o.api.api); }},
      {"abi_major 2", f, unsupported, {"abi_major 2:"},
       [](World&, Outs& o) { return kvzch_get_api(2, &o.api.api, sizeof o.api.api); }},
      {"abi_major UINT32_MAX", f, unsupported, {"abi_major 4294967295:"},
       [](World&, Outs& o) { return kvzch_get_api(UINT32_MAX, &o.api.api, sizeof o.api.api); }},
      {"table NULL", f, KVZCH_STATUS_NULL_ARGUMENT, {"table is NULL"},
       [](World&, Outs&) { return kvzch_get_api(1, nullptr, sizeof(kvzch_api_v1)); }},
      {"table_size 0", f, inval, {"table_size 0 ", str(v1_0_size)},
       [](World&, Outs& o) { return kvzch_get_api(1, &o.api.api, 0); }},
      {"table_size of the header fields only", f, inval, {"table_size 8 "},
       [](World&, Outs& o) { return kvzch_get_api(1, &o.api.api, 8); }},
      {"table_size one byte short of 1.0", f, inval, {"table_size " + str(v1_0_size - 1)},
       [](World&, Outs& o) { return kvzch_get_api(1, &o.api.api, v1_0_size - 1); }},
      // Read as a size, neither is: nothing past the host's table may be zeroed.
      {"table_size 4097, past a page", f, inval, {"table_size 4097 ", "4096", "sizeof"},
       [](World&, Outs& o) { return kvzch_get_api(1, &o.api.api, 4097); }},
      {"table_size SIZE_MAX", f, inval, {"table_size " + str(SIZE_MAX) + " "},
       [](World&, Outs& o) { return kvzch_get_api(1, &o.api.api, SIZE_MAX); }},
      {"table misaligned", f, inval, {"table ", "not aligned"},
       [](World&, Outs& o) {
         return kvzch_get_api(1, misaligned<kvzch_api_v1>(o, 0), sizeof(kvzch_api_v1));
       }},
  });
}

// ------------------------------------------------------------- functions without a status

// They cannot report, so bad input must yield their documented fallback, and
// they must leave the thread's last error alone.
TEST(BadInput, FunctionsWithoutAStatus) {
  ASSERT_EQ(kvzch_get_api(kMarkerMajor, nullptr, 0), KVZCH_STATUS_UNSUPPORTED);
  const std::string marker = last_error();

  const std::string long_name(4096, 'a');
  for (const char* name : {static_cast<const char*>(nullptr), "", "STAT_SINK", "stat_sink ",
                           "stat_sink\n", " stat_sink", "stat_sin", "stat_sink\xff", "\xff\xfe",
                           long_name.c_str()}) {
    EXPECT_FALSE(kvzch_has_feature(name)) << (name == nullptr ? "NULL" : name);
  }
  // The enum's values run 0..8, so it can hold up to 15 in C++ as well.
  EXPECT_STREQ(kvzch_status_name(static_cast<kvzch_status>(9)), "UNKNOWN");
  EXPECT_STREQ(kvzch_status_name(static_cast<kvzch_status>(15)), "UNKNOWN");
  EXPECT_EQ(kvzch_stat_name(3), nullptr);
  EXPECT_EQ(kvzch_stat_name(0x80000000u), nullptr);
  EXPECT_EQ(kvzch_abi_version() >> 16, static_cast<uint32_t>(KVZCH_ABI_MAJOR));
  EXPECT_NE(kvzch_version(), nullptr);

  // The parentheses call the 1.0 function, not the header's macro; both
  // take NULL as a no-op.
  (kvzch_options_init)(nullptr);
  kvzch_options_init(nullptr);
  alignas(kvzch_options) unsigned char bytes[sizeof(kvzch_options) + 1];
  std::memset(bytes, kSentinel, sizeof bytes);
  (kvzch_options_init)(reinterpret_cast<kvzch_options*>(bytes + 1));
  for (unsigned char b : bytes) EXPECT_EQ(b, kSentinel) << "wrote through a misaligned opts";
  kvzch_cache_destroy(nullptr);

  // A NULL buffer with a length: the length is reported, nothing written.
  EXPECT_EQ(kvzch_last_error_message(nullptr, 64), marker.size());
  char one = 'X';
  EXPECT_EQ(kvzch_last_error_message(&one, 0), marker.size());
  EXPECT_EQ(one, 'X') << "wrote with len 0";

  EXPECT_EQ(last_error(), marker);
}

// ------------------------------------------------------------- edges that succeed

// A 1.0 host's 40-byte struct is followed by whatever its memory holds: the
// library must read none of it, so the 1.1 fields keep their defaults.
TEST(BadInputEdges, BytesPastAVersion10StructAreNotRead) {
  kvzch_options opts;
  std::memset(&opts, 0xEE, sizeof opts);
  (kvzch_options_init)(&opts);
  ASSERT_EQ(opts.struct_size, 40u);
  EXPECT_EQ(opts.eviction_policy, 0xEEEEEEEEu) << "the 1.0 init wrote past the 1.0 struct";
  EXPECT_EQ(opts.reserved1, 0xEEEEEEEEu) << "the 1.0 init wrote past the 1.0 struct";
  opts.row_bytes = kRowBytes;
  opts.max_rows = 1;
  CachePtr cache = make_cache(opts);
  ASSERT_NE(cache, nullptr) << last_error();
  // With the default (no eviction) policy, a full cache refuses a new id.
  const int64_t ids[] = {1, 2};
  const std::vector<uint8_t> rows = rows_for({1, 2}, kRowBytes, 1);
  ASSERT_EQ(kvzch_cache_batch_set(cache.get(), ids, 1, rows.data(), kRowBytes, 1), KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), ids + 1, 1, rows.data() + kRowBytes, kRowBytes, 1),
            KVZCH_STATUS_CAPACITY_EXCEEDED);
}

TEST(BadInputEdges, OptionsInitSizedFillsOnlyWhatItHas) {
  struct {
    kvzch_options opts;
    unsigned char tail[16];
  } newer;
  std::memset(&newer, 0xEE, sizeof newer);
  ASSERT_EQ(kvzch_options_init_sized(&newer.opts, sizeof newer), KVZCH_STATUS_OK) << last_error();
  EXPECT_EQ(newer.opts.struct_size, sizeof(kvzch_options));
  EXPECT_EQ(newer.opts.eviction_policy, static_cast<uint32_t>(KVZCH_EVICT_NONE));
  EXPECT_EQ(newer.opts.reserved1, 0u);
  for (unsigned char b : newer.tail) EXPECT_EQ(b, 0xEE) << "wrote past the fields it has";

  kvzch_options exact;
  std::memset(&exact, 0xEE, sizeof exact);
  ASSERT_EQ(kvzch_options_init_sized(&exact, 40), KVZCH_STATUS_OK) << last_error();
  EXPECT_EQ(exact.struct_size, 40u);
  EXPECT_EQ(exact.eviction_policy, 0xEEEEEEEEu) << "wrote past size";
}

TEST(BadInputEdges, InfoForAVersion10HostFillsOnlyItsFields) {
  CachePtr cache = make_cache(kRowBytes);
  ASSERT_NE(cache, nullptr);
  kvzch_cache_info info;
  std::memset(&info, 0xEE, sizeof info);
  info.struct_size = 32;
  ASSERT_EQ(kvzch_cache_get_info(cache.get(), &info), KVZCH_STATUS_OK) << last_error();
  EXPECT_EQ(info.struct_size, 32u);
  EXPECT_EQ(info.row_bytes, kRowBytes);
  EXPECT_EQ(info.rows, 0u);
  EXPECT_EQ(info.inserts, 0xEEEEEEEEEEEEEEEEu) << "wrote past struct_size";
}

// Buffers that touch but do not share a byte are fine.
TEST(BadInputEdges, AdjacentBuffersDoNotOverlap) {
  CachePtr cache = make_cache(kRowBytes);
  ASSERT_NE(cache, nullptr);
  const std::vector<uint8_t> rows = rows_for(kBatch, kRowBytes, 1);
  ASSERT_EQ(kvzch_cache_batch_set(cache.get(), kBatch.data(), kN, rows.data(), rows.size(), 1),
            KVZCH_STATUS_OK);
  // ids | out | stats | hit_mask, back to back (each keeps its alignment).
  alignas(8) unsigned char
      buf[kN * sizeof(int64_t) + kBatchRowsLen + sizeof(kvzch_batch_stats) + kN];
  int64_t* ids = reinterpret_cast<int64_t*>(buf);
  std::memcpy(ids, kBatch.data(), kN * sizeof(int64_t));
  unsigned char* out = buf + kN * sizeof(int64_t);
  kvzch_batch_stats* stats = reinterpret_cast<kvzch_batch_stats*>(out + kBatchRowsLen);
  uint8_t* mask = reinterpret_cast<uint8_t*>(stats + 1);
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, kN, out, kBatchRowsLen, mask, stats),
            KVZCH_STATUS_OK)
      << last_error();
  for (size_t i = 0; i < kN; ++i) {
    EXPECT_EQ(mask[i], 1);
    EXPECT_TRUE(row_equals(out + i * kRowBytes, kRowBytes, kBatch[i], 1));
  }
  EXPECT_EQ(stats->hits, kN);
}

// Memory that ends where an inaccessible page begins: a buffer placed at its
// end faults on the first byte anyone reads or writes past it. The library is
// not instrumented, so this is how a stray read of its own shows without
// valgrind: an older host's smaller struct, a name, a batch's buffers.
class GuardedPage {
 public:
  GuardedPage() : page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))) {
    void* p = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      base_ = static_cast<unsigned char*>(p);
      if (mprotect(base_ + page_, page_, PROT_NONE) != 0) {
        munmap(base_, 2 * page_);
        base_ = nullptr;
      }
    }
  }
  GuardedPage(const GuardedPage&) = delete;
  GuardedPage& operator=(const GuardedPage&) = delete;
  ~GuardedPage() {
    if (base_ != nullptr) munmap(base_, 2 * page_);
  }

  bool ok() const { return base_ != nullptr; }

  // The last `bytes` bytes before the guard, filled with kSentinel.
  template <class T = unsigned char>
  T* last(size_t bytes) {
    unsigned char* p = base_ + page_ - bytes;
    std::memset(p, kSentinel, bytes);
    return reinterpret_cast<T*>(p);
  }

 private:
  size_t page_;
  unsigned char* base_ = nullptr;
};

TEST(BadInputEdges, NothingIsReadOrWrittenPastTheBytesAHostDeclares) {
  GuardedPage pages[12];
  for (const GuardedPage& page : pages) ASSERT_TRUE(page.ok()) << "mmap failed";

  // A name whose NUL is the last readable byte.
  char* name = pages[0].last<char>(sizeof kTable);
  std::memcpy(name, kTable, sizeof kTable);
  EXPECT_TRUE(kvzch_has_feature(std::strcpy(pages[1].last<char>(sizeof "stat_sink"), "stat_sink")));

  // A 1.0 host: 40-byte options, 32-byte info, the 1.0 table.
  kvzch_options* opts = pages[2].last<kvzch_options>(40);
  (kvzch_options_init)(opts);
  ASSERT_EQ(kvzch_options_init_sized(opts, 40), KVZCH_STATUS_OK) << last_error();
  opts->row_bytes = 13;  // rows of an odd width end unaligned at the guard
  opts->name = name;
  kvzch_cache* raw = nullptr;
  ASSERT_EQ(kvzch_cache_create(opts, &raw), KVZCH_STATUS_OK) << last_error();
  CachePtr cache(raw);

  kvzch_cache_info* info = pages[3].last<kvzch_cache_info>(32);
  info->struct_size = 32;
  EXPECT_EQ(kvzch_cache_get_info(cache.get(), info), KVZCH_STATUS_OK) << last_error();

  const size_t v1_0_table = offsetof(kvzch_api_v1, cache_compact);
  EXPECT_EQ(kvzch_get_api(1, pages[4].last<kvzch_api_v1>(v1_0_table), v1_0_table),
            KVZCH_STATUS_OK)
      << last_error();

  // A batch whose every buffer is exactly as long as the call says.
  int64_t* ids = pages[5].last<int64_t>(kN * sizeof(int64_t));
  std::memcpy(ids, kBatch.data(), kN * sizeof(int64_t));
  const std::vector<uint8_t> rows = rows_for(kBatch, 13, 1);
  uint8_t* rows_at_guard = pages[6].last<uint8_t>(rows.size());
  std::memcpy(rows_at_guard, rows.data(), rows.size());
  ASSERT_EQ(kvzch_cache_batch_set(cache.get(), ids, kN, rows_at_guard, rows.size(), 1),
            KVZCH_STATUS_OK)
      << last_error();
  uint8_t* out = pages[7].last<uint8_t>(rows.size());
  uint8_t* mask = pages[8].last<uint8_t>(kN);
  kvzch_batch_stats* stats = pages[9].last<kvzch_batch_stats>(sizeof(kvzch_batch_stats));
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, kN, out, rows.size(), mask, stats),
            KVZCH_STATUS_OK)
      << last_error();
  EXPECT_EQ(std::memcmp(out, rows.data(), rows.size()), 0);
  EXPECT_EQ(stats->hits, kN);
  uint64_t* removed = pages[10].last<uint64_t>(sizeof(uint64_t));
  ASSERT_EQ(kvzch_cache_batch_remove(cache.get(), ids, kN, removed), KVZCH_STATUS_OK);
  EXPECT_EQ(*removed, kN);

  // A message buffer shorter than the message.
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, kN, out, 1, mask, stats),
            KVZCH_STATUS_INVALID_ARGUMENT);
  char* message = pages[11].last<char>(8);
  EXPECT_GT(kvzch_last_error_message(message, 8), 8u);
  EXPECT_EQ(message[7], '\0');
}

}  // namespace
