// A plugin-style host: not linked against kvzch, it dlopens libkvzch.so and
// reaches everything through the single symbol kvzch_get_api, the way a
// predictor binary probes whichever library version is deployed. Declaring a
// kvzch_* function call here would fail to link, which keeps it honest.
#ifdef KVZCH_TEST_HAND_COPY
#include "abi_hand_copy.h"
#else
#include "kvzch.h"
#endif

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

using GetApi = kvzch_status (*)(uint32_t, kvzch_api_v1*, size_t);

class Plugin : public ::testing::Test {
 protected:
  void SetUp() override {
    // Not linked: the symbol must be absent before dlopen.
    ASSERT_EQ(dlsym(RTLD_DEFAULT, "kvzch_get_api"), nullptr);
    handle_ = dlopen(KVZCH_LIBRARY_PATH, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(handle_, nullptr) << dlerror();
    get_api_ = reinterpret_cast<GetApi>(dlsym(handle_, "kvzch_get_api"));
    ASSERT_NE(get_api_, nullptr) << dlerror();
  }

  void TearDown() override {
    if (handle_ != nullptr) dlclose(handle_);
  }

  kvzch_api_v1 table() {
    kvzch_api_v1 api;
    std::memset(&api, 0, sizeof api);
    EXPECT_EQ(get_api_(1, &api, sizeof api), KVZCH_STATUS_OK);
    return api;
  }

  void* handle_ = nullptr;
  GetApi get_api_ = nullptr;
};

TEST_F(Plugin, OtherMajorsAreUnsupported) {
  kvzch_api_v1 api;
  std::memset(&api, 0xAB, sizeof api);
  EXPECT_EQ(get_api_(2, &api, sizeof api), KVZCH_STATUS_UNSUPPORTED);
  EXPECT_EQ(get_api_(0, &api, sizeof api), KVZCH_STATUS_UNSUPPORTED);
  EXPECT_EQ(api.struct_size, 0xABABABABu) << "the table was written on error";
}

TEST_F(Plugin, TooSmallTableIsInvalid) {
  kvzch_api_v1 api;
  // The hand copy is the 1.0 table; the generated header's 1.1 table starts its
  // additions at cache_compact.
#ifdef KVZCH_TEST_HAND_COPY
  const std::size_t v1_0_size = sizeof api;
#else
  const std::size_t v1_0_size = offsetof(kvzch_api_v1, cache_compact);
#endif
  EXPECT_EQ(get_api_(1, &api, v1_0_size - 1), KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(get_api_(1, &api, offsetof(kvzch_api_v1, unregister_global_stat_sink)),
            KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(get_api_(1, &api, 0), KVZCH_STATUS_INVALID_ARGUMENT);
}

TEST_F(Plugin, NullTableIsNullArgument) {
  EXPECT_EQ(get_api_(1, nullptr, sizeof(kvzch_api_v1)), KVZCH_STATUS_NULL_ARGUMENT);
}

TEST_F(Plugin, ExactTableIsFilled) {
  kvzch_api_v1 api;
  std::memset(&api, 0, sizeof api);
  ASSERT_EQ(get_api_(1, &api, sizeof api), KVZCH_STATUS_OK);
  EXPECT_EQ(api.struct_size, sizeof api);
  EXPECT_EQ(api.abi_version >> 16, 1u);
  // Every 1.0 entry is there.
  const size_t first = offsetof(kvzch_api_v1, abi_version_fn);
  const size_t count = (sizeof api - first) / sizeof(void (*)(void));
  for (size_t i = 0; i < count; ++i) {
    void (*entry)(void) = nullptr;
    std::memcpy(&entry, reinterpret_cast<const char*>(&api) + first + i * sizeof entry, sizeof entry);
    EXPECT_NE(entry, nullptr) << "entry " << i;
  }
  ASSERT_NE(api.abi_version_fn, nullptr);
  EXPECT_EQ(api.abi_version_fn(), api.abi_version);
}

// A host built against a later minor passes a longer table: the entries this
// library lacks come back NULL, and struct_size says how far it filled.
TEST_F(Plugin, LargerTableGetsZeroedTail) {
  struct {
    kvzch_api_v1 api;
    void (*future[16])(void);
  } bigger;
  std::memset(&bigger, 0xAB, sizeof bigger);
  ASSERT_EQ(get_api_(1, &bigger.api, sizeof bigger), KVZCH_STATUS_OK);
  const uint32_t filled = bigger.api.struct_size;
  EXPECT_GE(filled, sizeof(kvzch_api_v1));
  EXPECT_LT(filled, sizeof bigger);
  EXPECT_EQ(filled % sizeof(void*), 0u);
  if ((bigger.api.abi_version & 0xFFFFu) == 0) {
    EXPECT_EQ(filled, sizeof(kvzch_api_v1)) << "a 1.0 library has exactly the 1.0 table";
  }
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&bigger);
  for (size_t b = filled; b < sizeof bigger; ++b) {
    ASSERT_EQ(bytes[b], 0) << "byte " << b << " past struct_size " << filled << " not zeroed";
  }
}

struct SinkLog {
  int calls = 0;
  std::string table;
  uint64_t hits = 0;
  int releases = 0;  // 1.3
};

void log_sink(void* user_data, const kvzch_batch_event* event) {
  SinkLog* log = static_cast<SinkLog*>(user_data);
  ++log->calls;
  log->table = event->table;
  log->hits = event->stats.hits;
}

TEST_F(Plugin, RoundTripThroughTheTableOnly) {
  const kvzch_api_v1 api = table();
  ASSERT_TRUE(api.has_feature("plugin_api_v1"));
  ASSERT_TRUE(api.has_feature("stat_sink"));
  EXPECT_FALSE(api.has_feature("nope"));
  EXPECT_STREQ(api.status_name(KVZCH_STATUS_NOT_FOUND), "NOT_FOUND");
  EXPECT_STREQ(api.stat_name(KVZCH_STAT_READ_TOTAL_COUNT), "kvzch.inference.read_total_count");
  EXPECT_NE(api.version(), nullptr);

  kvzch_options opts;
  api.options_init(&opts);
  opts.row_bytes = 12;
  opts.name = "plugin_table";
  kvzch_cache* cache = nullptr;
  ASSERT_EQ(api.cache_create(&opts, &cache), KVZCH_STATUS_OK);

  SinkLog log;
  uint64_t sink_id = 0;
  ASSERT_EQ(api.cache_register_stat_sink(cache, log_sink, &log, &sink_id), KVZCH_STATUS_OK);

  const int64_t ids[] = {-3, 4};
  unsigned char rows[24];
  for (size_t i = 0; i < sizeof rows; ++i) rows[i] = static_cast<unsigned char>(i + 1);
  ASSERT_EQ(api.cache_batch_set(cache, ids, 2, rows, sizeof rows, 5), KVZCH_STATUS_OK);

  const int64_t query[] = {4, 5, -3};
  unsigned char out[36];
  uint8_t mask[3];
  kvzch_batch_stats stats{};
  ASSERT_EQ(api.cache_batch_get(cache, query, 3, out, sizeof out, mask, &stats), KVZCH_STATUS_OK);
  EXPECT_EQ(std::memcmp(out, rows + 12, 12), 0);
  EXPECT_EQ(std::memcmp(out + 24, rows, 12), 0);
  EXPECT_EQ(mask[1], 0);
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(log.calls, 1);
  EXPECT_EQ(log.table, "plugin_table");
  EXPECT_EQ(log.hits, 2u);

  kvzch_read_stats cumulative{};
  ASSERT_EQ(api.cache_get_cumulative_read_stats(cache, &cumulative), KVZCH_STATUS_OK);
  EXPECT_EQ(cumulative.total, 3u);
  kvzch_read_stats window{};
  ASSERT_EQ(api.cache_get_read_hit_rate_stats(cache, &window), KVZCH_STATUS_OK);
  EXPECT_EQ(window.hits, 2u);
  ASSERT_EQ(api.cache_get_read_hit_rate_stats(cache, &window), KVZCH_STATUS_OK);
  EXPECT_EQ(window.total, 0u);

  kvzch_cache_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  ASSERT_EQ(api.cache_get_info(cache, &info), KVZCH_STATUS_OK);
  EXPECT_EQ(info.rows, 2u);
  EXPECT_EQ(info.row_bytes, 12u);

  uint64_t removed = 0;
  ASSERT_EQ(api.cache_batch_remove(cache, ids, 1, &removed), KVZCH_STATUS_OK);
  EXPECT_EQ(removed, 1u);
  uint64_t evicted = 0;
  ASSERT_EQ(api.cache_evict_older_than(cache, 6, &evicted), KVZCH_STATUS_OK);
  EXPECT_EQ(evicted, 1u);

  EXPECT_EQ(api.cache_batch_get(cache, query, 3, out, 35, nullptr, nullptr),
            KVZCH_STATUS_INVALID_ARGUMENT);
  char message[256];
  EXPECT_GT(api.last_error_message(message, sizeof message), 0u);
  EXPECT_NE(std::string(message).find("out_len"), std::string::npos) << message;

  ASSERT_EQ(api.cache_unregister_stat_sink(cache, sink_id), KVZCH_STATUS_OK);
  EXPECT_EQ(api.cache_unregister_stat_sink(cache, sink_id), KVZCH_STATUS_NOT_FOUND);
  api.cache_destroy(cache);
}

// A cache of 4-byte rows named "default", made through the table; NULL
// when it cannot be made.
kvzch_cache* default_cache(const kvzch_api_v1& api) {
  kvzch_options opts;
  api.options_init(&opts);
  opts.row_bytes = 4;
  kvzch_cache* cache = nullptr;
  return api.cache_create(&opts, &cache) == KVZCH_STATUS_OK ? cache : nullptr;
}

TEST_F(Plugin, GlobalSinkThroughTheTable) {
  const kvzch_api_v1 api = table();
  kvzch_cache* const cache = default_cache(api);
  ASSERT_NE(cache, nullptr);
  SinkLog log;
  uint64_t id = 0;
  ASSERT_EQ(api.register_global_stat_sink(log_sink, &log, &id), KVZCH_STATUS_OK);
  const int64_t key = 1;
  unsigned char out[4];
  ASSERT_EQ(api.cache_batch_get(cache, &key, 1, out, sizeof out, nullptr, nullptr), KVZCH_STATUS_OK);
  ASSERT_EQ(api.unregister_global_stat_sink(id), KVZCH_STATUS_OK);
  EXPECT_EQ(log.calls, 1);
  EXPECT_EQ(log.table, "default");
  api.cache_destroy(cache);
}

#ifndef KVZCH_TEST_HAND_COPY
void count_release(void* user_data) { ++static_cast<SinkLog*>(user_data)->releases; }

// The 1.3 entries: each registration's release is called once, by the
// unregister of a global sink and by the destroy of a cache sink's cache.
TEST_F(Plugin, SinksWithAReleaseThroughTheTable) {
  const kvzch_api_v1 api = table();
  ASSERT_TRUE(api.has_feature("stat_sink_release"));
  ASSERT_NE(api.cache_register_stat_sink_with_release, nullptr);
  ASSERT_NE(api.register_global_stat_sink_with_release, nullptr);
  kvzch_cache* const cache = default_cache(api);
  ASSERT_NE(cache, nullptr);
  SinkLog cache_log;
  SinkLog global_log;
  uint64_t cache_id = 0;
  uint64_t global_id = 0;
  ASSERT_EQ(api.cache_register_stat_sink_with_release(cache, log_sink, &cache_log, count_release,
                                                      &cache_id),
            KVZCH_STATUS_OK);
  ASSERT_EQ(api.register_global_stat_sink_with_release(log_sink, &global_log, count_release,
                                                       &global_id),
            KVZCH_STATUS_OK);
  ASSERT_EQ(api.unregister_global_stat_sink(global_id), KVZCH_STATUS_OK);
  EXPECT_EQ(global_log.releases, 1);
  const int64_t key = 1;
  unsigned char out[4];
  ASSERT_EQ(api.cache_batch_get(cache, &key, 1, out, sizeof out, nullptr, nullptr), KVZCH_STATUS_OK);
  EXPECT_EQ(cache_log.calls, 1);
  EXPECT_EQ(cache_log.releases, 0);
  api.cache_destroy(cache);
  EXPECT_EQ(cache_log.releases, 1);
  EXPECT_EQ(global_log.calls, 0);
  EXPECT_EQ(global_log.releases, 1);
}
#endif

}  // namespace
