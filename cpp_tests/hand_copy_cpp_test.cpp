// A C++ host compiled against the hand copy of ABI.md, not the generated
// header, and linked to libkvzch: proves the contract alone is enough.
#include "abi_hand_copy.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

// The LP64 layout the contract fixes (x86_64, aarch64).
static_assert(sizeof(void*) == 8);
static_assert(sizeof(kvzch_options) == 40);
static_assert(offsetof(kvzch_options, row_bytes) == 4);
static_assert(offsetof(kvzch_options, num_shards) == 8);
static_assert(offsetof(kvzch_options, miss_policy) == 12);
static_assert(offsetof(kvzch_options, max_rows) == 16);
static_assert(offsetof(kvzch_options, max_memory_bytes) == 24);
static_assert(offsetof(kvzch_options, name) == 32);
static_assert(sizeof(kvzch_batch_stats) == 32);
static_assert(offsetof(kvzch_batch_stats, duration_ns) == 24);
static_assert(sizeof(kvzch_read_stats) == 24);
static_assert(sizeof(kvzch_cache_info) == 32);
static_assert(offsetof(kvzch_cache_info, num_shards) == 8);
static_assert(offsetof(kvzch_cache_info, rows) == 16);
static_assert(offsetof(kvzch_cache_info, memory_bytes) == 24);
static_assert(sizeof(kvzch_batch_event) == 48);
static_assert(offsetof(kvzch_batch_event, table) == 8);
static_assert(offsetof(kvzch_batch_event, stats) == 16);
static_assert(sizeof(kvzch_api_v1) == 8 + 20 * sizeof(void*));
static_assert(offsetof(kvzch_api_v1, abi_version_fn) == 8);
static_assert(offsetof(kvzch_api_v1, cache_batch_get) == 8 + 10 * sizeof(void*));
static_assert(offsetof(kvzch_api_v1, unregister_global_stat_sink) == 8 + 19 * sizeof(void*));
static_assert(KVZCH_ABI_MAJOR == 1 && KVZCH_ABI_MINOR == 0);

uint32_t library_minor() { return kvzch_abi_version() & 0xFFFFu; }

// The sizes the running library reports for its own structs match this copy
// (a later minor may only have grown them).
TEST(HandCopy, LibraryLayoutMatchesTheContract) {
  union {
    kvzch_options opts;
    unsigned char room[512];
  } padded;
  std::memset(&padded, 0, sizeof padded);
  kvzch_options_init(&padded.opts);
  EXPECT_GE(padded.opts.struct_size, sizeof(kvzch_options));
  if (library_minor() == 0) {
    EXPECT_EQ(padded.opts.struct_size, sizeof(kvzch_options));
  }

  struct {
    kvzch_api_v1 api;
    void (*future[32])(void);
  } bigger;
  std::memset(&bigger, 0, sizeof bigger);
  ASSERT_EQ(kvzch_get_api(1, &bigger.api, sizeof bigger), KVZCH_STATUS_OK);
  EXPECT_GE(bigger.api.struct_size, sizeof(kvzch_api_v1));
  if (library_minor() == 0) {
    EXPECT_EQ(bigger.api.struct_size, sizeof(kvzch_api_v1));
  }
  // The table's entries are the very functions this copy declares, in order.
  EXPECT_EQ(bigger.api.abi_version_fn, &kvzch_abi_version);
  EXPECT_EQ(bigger.api.cache_batch_get, &kvzch_cache_batch_get);
  EXPECT_EQ(bigger.api.unregister_global_stat_sink, &kvzch_unregister_global_stat_sink);
}

struct Events {
  std::vector<std::string> tables;
  std::vector<kvzch_batch_stats> stats;
  uint32_t struct_size = 0;
};

void record(void* user_data, const kvzch_batch_event* event) {
  Events* e = static_cast<Events*>(user_data);
  e->tables.emplace_back(event->table);
  e->stats.push_back(event->stats);
  e->struct_size = event->struct_size;
}

TEST(HandCopy, RoundTripStatsAndSinks) {
  kvzch_options opts;
  kvzch_options_init(&opts);
  opts.row_bytes = 16;
  opts.name = "hand_copy_cpp";
  kvzch_cache* cache = nullptr;
  ASSERT_EQ(kvzch_cache_create(&opts, &cache), KVZCH_STATUS_OK);

  Events on_cache;
  Events global;
  uint64_t cache_sink = 0;
  uint64_t global_sink = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache, record, &on_cache, &cache_sink), KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_register_global_stat_sink(record, &global, &global_sink), KVZCH_STATUS_OK);

  const std::vector<int64_t> ids = {INT64_MIN, 0, 99};
  std::vector<unsigned char> rows(ids.size() * 16);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<unsigned char>(i * 3);
  ASSERT_EQ(kvzch_cache_batch_set(cache, ids.data(), ids.size(), rows.data(), rows.size(), 1),
            KVZCH_STATUS_OK);

  const int64_t query[] = {99, 1, INT64_MIN};
  unsigned char out[48];
  std::memset(out, 0xEE, sizeof out);
  uint8_t mask[3];
  kvzch_batch_stats stats{};
  ASSERT_EQ(kvzch_cache_batch_get(cache, query, 3, out, sizeof out, mask, &stats), KVZCH_STATUS_OK);
  EXPECT_EQ(std::memcmp(out, rows.data() + 32, 16), 0);
  for (int b = 16; b < 32; ++b) EXPECT_EQ(out[b], 0) << "zero-fill miss";
  EXPECT_EQ(std::memcmp(out + 32, rows.data(), 16), 0);
  EXPECT_EQ(mask[1], 0);
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.total, 3u);

  ASSERT_EQ(on_cache.tables.size(), 1u);
  EXPECT_EQ(on_cache.tables[0], "hand_copy_cpp");
  EXPECT_EQ(on_cache.stats[0].hits, 2u);
  EXPECT_GE(on_cache.struct_size, sizeof(kvzch_batch_event));
  ASSERT_EQ(global.tables.size(), 1u);

  kvzch_read_stats window{};
  ASSERT_EQ(kvzch_cache_get_read_hit_rate_stats(cache, &window), KVZCH_STATUS_OK);
  EXPECT_EQ(window.hits, 2u);
  EXPECT_EQ(window.misses, 1u);
  kvzch_read_stats total{};
  ASSERT_EQ(kvzch_cache_get_cumulative_read_stats(cache, &total), KVZCH_STATUS_OK);
  EXPECT_EQ(total.total, 3u);

  kvzch_cache_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  ASSERT_EQ(kvzch_cache_get_info(cache, &info), KVZCH_STATUS_OK);
  EXPECT_EQ(info.rows, 3u);
  EXPECT_EQ(info.row_bytes, 16u);

  ASSERT_EQ(kvzch_cache_unregister_stat_sink(cache, cache_sink), KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_unregister_global_stat_sink(global_sink), KVZCH_STATUS_OK);
  kvzch_cache_destroy(cache);
}

}  // namespace
