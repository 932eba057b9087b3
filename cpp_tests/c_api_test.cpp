// The C ABI 1.0 contract (docs/ABI.md), exercised through plain C calls.
// Built twice: against libkvzch.so and against libkvzch.a.
#include "kvzch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bitset>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

using kvzch_test::CachePtr;
using kvzch_test::fill_row;
using kvzch_test::last_error;
using kvzch_test::make_cache;
using kvzch_test::options;
using kvzch_test::row_equals;
using kvzch_test::rows_for;
using kvzch_test::info_of;
using kvzch_test::rows_in;

namespace {

kvzch_read_stats cumulative(const kvzch_cache* cache) {
  kvzch_read_stats s{};
  EXPECT_EQ(kvzch_cache_get_cumulative_read_stats(cache, &s), KVZCH_STATUS_OK);
  return s;
}

kvzch_read_stats take_window(kvzch_cache* cache) {
  kvzch_read_stats s{};
  EXPECT_EQ(kvzch_cache_get_read_hit_rate_stats(cache, &s), KVZCH_STATUS_OK);
  return s;
}

// The ids 0 .. n-1.
std::vector<int64_t> first_ids(size_t n) {
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i);
  return ids;
}

void set_rows(kvzch_cache* cache, const std::vector<int64_t>& ids, uint32_t row_bytes,
              uint32_t version, uint32_t timestamp) {
  const std::vector<uint8_t> rows = rows_for(ids, row_bytes, version);
  ASSERT_EQ(kvzch_cache_batch_set(cache, ids.data(), ids.size(), rows.data(), rows.size(), timestamp),
            KVZCH_STATUS_OK)
      << last_error();
}

// A cache of `row_bytes` rows holding `ids` at `version`, stamped
// `timestamp`; nullptr when it cannot be made.
CachePtr cache_holding(const std::vector<int64_t>& ids, uint32_t row_bytes, uint32_t version,
                       uint32_t timestamp) {
  CachePtr cache = make_cache(row_bytes);
  if (cache != nullptr) set_rows(cache.get(), ids, row_bytes, version, timestamp);
  return cache;
}

// Runs `round` back to back for `minimum`, then on until `seen()` holds, for
// at most 10 s in all. A concurrency test checks that something happened
// among its threads, and on a busy machine, under a sanitizer, the threads
// it waits on may hardly have run within the minimum. `round` is told
// whether the minimum has passed.
template <class Seen, class Round>
void run_rounds(std::chrono::milliseconds minimum, Seen seen, Round round) {
  const auto start = std::chrono::steady_clock::now();
  const auto give_up = start + std::chrono::seconds(10);
  for (auto now = start; now < start + minimum || (!seen() && now < give_up);
       now = std::chrono::steady_clock::now()) {
    round(now >= start + minimum);
  }
}

// ---------------------------------------------------------------- lifecycle

// The header's kvzch_options_init, inline (it calls no library function; the
// exported 1.0 symbol is tested in bad_input_test.cpp).
TEST(Lifecycle, HeaderOptionsInitSetsDefaults) {
  kvzch_options opts;
  std::memset(&opts, 0xAB, sizeof opts);
  kvzch_options_init(&opts);
  EXPECT_EQ(opts.struct_size, sizeof(kvzch_options));
  EXPECT_EQ(opts.num_shards, 0u);
  EXPECT_EQ(opts.miss_policy, static_cast<uint32_t>(KVZCH_MISS_ZERO_FILL));
  EXPECT_EQ(opts.max_rows, 0u);
  EXPECT_EQ(opts.max_memory_bytes, 0u);
  EXPECT_EQ(opts.name, nullptr);
  kvzch_options_init(nullptr);
  // C++ hosts may qualify C functions; the header's kvzch_options_init must
  // still expand to a call there.
  std::memset(&opts, 0xAB, sizeof opts);
  ::kvzch_options_init(&opts);
  EXPECT_EQ(opts.struct_size, sizeof(kvzch_options));
  EXPECT_EQ(opts.eviction_policy, static_cast<uint32_t>(KVZCH_EVICT_NONE));
}

TEST(Lifecycle, CreateAndDestroy) {
  kvzch_options opts = options(64);
  kvzch_cache* cache = nullptr;
  ASSERT_EQ(kvzch_cache_create(&opts, &cache), KVZCH_STATUS_OK) << last_error();
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(rows_in(cache), 0u);
  kvzch_cache_destroy(cache);
  kvzch_cache_destroy(nullptr);
}

TEST(Lifecycle, RowBytesBoundsAreInclusive) {
  EXPECT_NE(make_cache(1), nullptr) << last_error();
  EXPECT_NE(make_cache(65536), nullptr) << last_error();
}

// The table name a sink of `cache` sees in a batch's event.
std::string table_seen_by_a_sink(kvzch_cache* cache) {
  std::string seen;
  auto sink = [](void* user_data, const kvzch_batch_event* event) {
    *static_cast<std::string*>(user_data) = event->table;
  };
  uint64_t id = 0;
  EXPECT_EQ(kvzch_cache_register_stat_sink(cache, sink, &seen, &id), KVZCH_STATUS_OK);
  const int64_t key = 1;
  uint8_t out[8];
  EXPECT_EQ(kvzch_cache_batch_get(cache, &key, 1, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache, id), KVZCH_STATUS_OK);
  return seen;
}

TEST(Lifecycle, NullNameIsDefaultTable) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(table_seen_by_a_sink(cache.get()), "default");
}

// opts->name is the host's to reuse once create returns: the library keeps a
// copy, not the pointer.
TEST(Lifecycle, CreateCopiesTheName) {
  char name[] = "embeddings_v1";
  CachePtr cache = make_cache(8, KVZCH_MISS_ZERO_FILL, name);
  ASSERT_NE(cache, nullptr) << last_error();
  std::memcpy(name, "overwritten!!", sizeof name);
  EXPECT_EQ(table_seen_by_a_sink(cache.get()), "embeddings_v1");
}

// ---------------------------------------------------------------- options
// (Invalid options: bad_input_test.cpp.)

TEST(Options, ValidEdgeValuesAreAccepted) {
  kvzch_options opts = options(16);
  opts.num_shards = 65536;
  opts.name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";  // 64
  EXPECT_NE(make_cache(opts), nullptr) << last_error();

  opts = options(16, KVZCH_MISS_LEAVE_UNTOUCHED, "Table_9.v-2");
  EXPECT_NE(make_cache(opts), nullptr) << last_error();
}

TEST(Options, NumShardsRoundsUpToPowerOfTwo) {
  kvzch_options opts = options(16);
  opts.num_shards = 5;
  CachePtr cache = make_cache(opts);
  ASSERT_NE(cache, nullptr) << last_error();
  kvzch_cache_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(kvzch_cache_get_info(cache.get(), &info), KVZCH_STATUS_OK);
  EXPECT_EQ(info.num_shards, 8u);
}

// A host compiled against a newer header passes a bigger struct: the library
// reads only the fields it knows.
TEST(Options, LargerStructSizeFromNewerHostIsAccepted) {
  struct {
    kvzch_options opts;
    uint64_t future_fields[4];
  } newer;
  std::memset(&newer, 0, sizeof newer);
  kvzch_options_init(&newer.opts);
  newer.opts.struct_size = sizeof newer;
  newer.opts.row_bytes = 16;
  CachePtr cache = make_cache(newer.opts);
  EXPECT_NE(cache, nullptr) << last_error();
}

// ---------------------------------------------------------------- data

TEST(Data, RoundTripWithUnalignedBuffers) {
  const uint32_t rb = 13;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  const std::vector<int64_t> ids = {7, 3, 11, 1000003, 42};

  std::vector<uint8_t> in_storage(ids.size() * rb + 1);
  uint8_t* in = in_storage.data() + 1;
  for (size_t i = 0; i < ids.size(); ++i) fill_row(in + i * rb, rb, ids[i], 1);
  ASSERT_EQ(kvzch_cache_batch_set(cache.get(), ids.data(), ids.size(), in, ids.size() * rb, 10),
            KVZCH_STATUS_OK)
      << last_error();

  const std::vector<int64_t> query = {42, 7, 11, 3, 1000003, 7};
  std::vector<uint8_t> out_storage(query.size() * rb + 3, 0xEE);
  uint8_t* out = out_storage.data() + 3;
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), query.data(), query.size(), out, query.size() * rb,
                                  nullptr, nullptr),
            KVZCH_STATUS_OK)
      << last_error();
  for (size_t i = 0; i < query.size(); ++i) {
    EXPECT_TRUE(row_equals(out + i * rb, rb, query[i], 1)) << "row " << i;
  }
  for (size_t b = 0; b < 3; ++b) EXPECT_EQ(out_storage[b], 0xEE) << "wrote before the buffer";
}

TEST(Data, OverwriteReplacesRow) {
  CachePtr cache = make_cache(32);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2}, 32, 1, 10);
  set_rows(cache.get(), {2}, 32, 2, 11);
  const int64_t ids[] = {1, 2};
  uint8_t out[64];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 2, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_TRUE(row_equals(out, 32, 1, 1));
  EXPECT_TRUE(row_equals(out + 32, 32, 2, 2));
  const kvzch_cache_info info = info_of(cache.get());
  EXPECT_EQ(info.rows, 2u);
  EXPECT_EQ(info.inserts, 2u);
  EXPECT_EQ(info.updates, 1u);
}

TEST(Data, MissZeroFillClearsMissedRows) {
  const uint32_t rb = 24;
  CachePtr cache = make_cache(rb, KVZCH_MISS_ZERO_FILL);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {5}, rb, 1, 1);
  const int64_t ids[] = {99, 5, 100};
  std::vector<uint8_t> out(3 * rb, 0xAB);
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 3, out.data(), out.size(), nullptr, nullptr),
            KVZCH_STATUS_OK);
  for (uint32_t b = 0; b < rb; ++b) {
    EXPECT_EQ(out[b], 0) << b;
    EXPECT_EQ(out[2 * rb + b], 0) << b;
  }
  EXPECT_TRUE(row_equals(out.data() + rb, rb, 5, 1));
}

TEST(Data, MissLeaveUntouchedKeepsCallerBytes) {
  const uint32_t rb = 24;
  CachePtr cache = make_cache(rb, KVZCH_MISS_LEAVE_UNTOUCHED);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {5}, rb, 1, 1);
  const int64_t ids[] = {99, 5, 100};
  std::vector<uint8_t> out(3 * rb, 0xAB);
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 3, out.data(), out.size(), nullptr, nullptr),
            KVZCH_STATUS_OK);
  for (uint32_t b = 0; b < rb; ++b) {
    EXPECT_EQ(out[b], 0xAB) << b;
    EXPECT_EQ(out[2 * rb + b], 0xAB) << b;
  }
  EXPECT_TRUE(row_equals(out.data() + rb, rb, 5, 1));
}

TEST(Data, HitMaskAndBatchStats) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2, 3}, rb, 1, 1);
  // Duplicate lookups count each time.
  const int64_t ids[] = {1, 9, 2, 2, 8, 3, 1};
  const size_t n = sizeof ids / sizeof ids[0];
  std::vector<uint8_t> out(n * rb);
  uint8_t mask[n];
  std::memset(mask, 0x55, sizeof mask);
  kvzch_batch_stats stats;
  std::memset(&stats, 0xFF, sizeof stats);
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, n, out.data(), out.size(), mask, &stats),
            KVZCH_STATUS_OK);
  const uint8_t expected_mask[] = {1, 0, 1, 1, 0, 1, 1};
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(mask[i], expected_mask[i]) << i;
  EXPECT_EQ(stats.hits, 5u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.total, n);
  EXPECT_LT(stats.duration_ns, 60ull * 1000 * 1000 * 1000);
}

TEST(Data, DuplicateIdsInOneSetLastWins) {
  const uint32_t rb = 16;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  const int64_t ids[] = {5, 6, 5, 5};
  std::vector<uint8_t> rows(4 * rb);
  fill_row(rows.data(), rb, 5, 1);
  fill_row(rows.data() + rb, rb, 6, 1);
  fill_row(rows.data() + 2 * rb, rb, 5, 2);
  fill_row(rows.data() + 3 * rb, rb, 5, 3);
  ASSERT_EQ(kvzch_cache_batch_set(cache.get(), ids, 4, rows.data(), rows.size(), 1), KVZCH_STATUS_OK);
  kvzch_cache_info info = info_of(cache.get());
  EXPECT_EQ(info.rows, 2u);
  // Id 5's two earlier occurrences count as updates (kvzch_cache_info).
  EXPECT_EQ(info.inserts, 2u);
  EXPECT_EQ(info.updates, 2u);
  const int64_t key = 5;
  uint8_t out[rb];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_TRUE(row_equals(out, rb, 5, 3));

  // Removing the id once must leave nothing behind (no leaked duplicate).
  uint64_t removed = 0;
  ASSERT_EQ(kvzch_cache_batch_remove(cache.get(), &key, 1, &removed), KVZCH_STATUS_OK);
  EXPECT_EQ(removed, 1u);
  info = info_of(cache.get());
  EXPECT_EQ(info.rows, 1u);
  EXPECT_EQ(info.removals, 1u);
  uint8_t mask = 1;
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, &mask, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_EQ(mask, 0);
}

TEST(Data, NegativeAndExtremeIds) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  const std::vector<int64_t> ids = {INT64_MIN, -1, 0, 1, INT64_MAX, -4242};
  set_rows(cache.get(), ids, rb, 1, 1);
  EXPECT_EQ(rows_in(cache.get()), ids.size());
  std::vector<uint8_t> out(ids.size() * rb);
  std::vector<uint8_t> mask(ids.size());
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids.data(), ids.size(), out.data(), out.size(),
                                  mask.data(), nullptr),
            KVZCH_STATUS_OK);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(mask[i], 1) << ids[i];
    EXPECT_TRUE(row_equals(out.data() + i * rb, rb, ids[i], 1)) << ids[i];
  }
}

TEST(Data, BatchRemove) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2, 3, -4}, rb, 1, 1);
  const int64_t gone[] = {2, 77, -4};
  uint64_t removed = 99;
  ASSERT_EQ(kvzch_cache_batch_remove(cache.get(), gone, 3, &removed), KVZCH_STATUS_OK);
  EXPECT_EQ(removed, 2u);
  EXPECT_EQ(rows_in(cache.get()), 2u);
  // The out-param is optional.
  const int64_t again[] = {1};
  ASSERT_EQ(kvzch_cache_batch_remove(cache.get(), again, 1, nullptr), KVZCH_STATUS_OK);
  EXPECT_EQ(rows_in(cache.get()), 1u);

  const int64_t query[] = {1, 2, 3, -4};
  uint8_t out[4 * rb];
  uint8_t mask[4];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), query, 4, out, sizeof out, mask, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_EQ(mask[0], 0);
  EXPECT_EQ(mask[1], 0);
  EXPECT_EQ(mask[2], 1);
  EXPECT_EQ(mask[3], 0);
}

TEST(Data, EvictOlderThanIsStrict) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2, 3}, rb, 1, 100);
  set_rows(cache.get(), {4, 5}, rb, 1, 200);
  set_rows(cache.get(), {2}, rb, 2, 200);  // re-published: the new stamp counts
  uint64_t evicted = 0;
  ASSERT_EQ(kvzch_cache_evict_older_than(cache.get(), 200, &evicted), KVZCH_STATUS_OK);
  EXPECT_EQ(evicted, 2u);
  EXPECT_EQ(rows_in(cache.get()), 3u);
  const int64_t query[] = {1, 2, 3, 4, 5};
  uint8_t out[5 * rb];
  uint8_t mask[5];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), query, 5, out, sizeof out, mask, nullptr),
            KVZCH_STATUS_OK);
  const uint8_t expected[] = {0, 1, 0, 1, 1};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(mask[i], expected[i]) << query[i];
  EXPECT_TRUE(row_equals(out + rb, rb, 2, 2));

  ASSERT_EQ(kvzch_cache_evict_older_than(cache.get(), 200, nullptr), KVZCH_STATUS_OK);
  EXPECT_EQ(rows_in(cache.get()), 3u);
  ASSERT_EQ(kvzch_cache_evict_older_than(cache.get(), 201, &evicted), KVZCH_STATUS_OK);
  EXPECT_EQ(evicted, 3u);
  EXPECT_EQ(rows_in(cache.get()), 0u);
}

TEST(Data, InfoReportsShapeAndMemory) {
  const uint32_t rb = 100;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  std::vector<int64_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i) * 7919;
  set_rows(cache.get(), ids, rb, 1, 1);
  kvzch_cache_info info;
  std::memset(&info, 0xCD, sizeof info);
  info.struct_size = sizeof info;
  ASSERT_EQ(kvzch_cache_get_info(cache.get(), &info), KVZCH_STATUS_OK);
  EXPECT_EQ(info.row_bytes, rb);
  EXPECT_GE(info.num_shards, 1u);
  EXPECT_EQ(info.num_shards & (info.num_shards - 1), 0u) << "not a power of two";
  EXPECT_EQ(info.rows, ids.size());
  EXPECT_GE(info.memory_bytes, ids.size() * rb);
}

// A newer host's larger info struct (a later minor appends counters): the
// library fills the 1.0 fields and writes nothing past the host's struct_size.
TEST(Data, InfoHonoursLargerStructSize) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2}, 8, 1, 1);
  struct {
    kvzch_cache_info info;
    uint64_t future[5];
    unsigned char guard[16];
  } newer;
  std::memset(&newer, 0xCD, sizeof newer);
  newer.info.struct_size = offsetof(decltype(newer), guard);
  ASSERT_EQ(kvzch_cache_get_info(cache.get(), &newer.info), KVZCH_STATUS_OK) << last_error();
  EXPECT_EQ(newer.info.row_bytes, 8u);
  EXPECT_EQ(newer.info.rows, 2u);
  EXPECT_GE(newer.info.struct_size, sizeof(kvzch_cache_info));
  EXPECT_LE(newer.info.struct_size, offsetof(decltype(newer), guard));
  for (unsigned char byte : newer.guard) EXPECT_EQ(byte, 0xCD) << "wrote past struct_size";
}

TEST(Data, CapacityExceededLeavesCacheUnchanged) {
  const uint32_t rb = 8;
  kvzch_options opts = options(rb);
  opts.max_rows = 4;
  CachePtr cache = make_cache(opts);
  ASSERT_NE(cache, nullptr) << last_error();
  set_rows(cache.get(), {0, 1, 2}, rb, 1, 1);
  const std::vector<int64_t> too_many = {1, 3, 4};
  const std::vector<uint8_t> rows = rows_for(too_many, rb, 2);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), too_many.data(), too_many.size(), rows.data(),
                                  rows.size(), 2),
            KVZCH_STATUS_CAPACITY_EXCEEDED);
  EXPECT_FALSE(last_error().empty());
  EXPECT_EQ(rows_in(cache.get()), 3u);
  const int64_t query[] = {1, 3};
  uint8_t out[2 * rb];
  uint8_t mask[2];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), query, 2, out, sizeof out, mask, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_EQ(mask[0], 1);
  EXPECT_TRUE(row_equals(out, rb, 1, 1)) << "the failed batch overwrote id 1";
  EXPECT_EQ(mask[1], 0);
  // Nor restamped it: all three rows still carry timestamp 1. Then they are
  // stored again as they were.
  uint64_t expired = 0;
  ASSERT_EQ(kvzch_cache_evict_older_than(cache.get(), 2, &expired), KVZCH_STATUS_OK);
  EXPECT_EQ(expired, 3u) << "the failed batch restamped a row";
  set_rows(cache.get(), {0, 1, 2}, rb, 1, 1);

  // Up to the limit, and overwriting at the limit, still work.
  set_rows(cache.get(), {3}, rb, 1, 3);
  set_rows(cache.get(), {0, 1, 2, 3}, rb, 3, 4);
  EXPECT_EQ(rows_in(cache.get()), 4u);
}

// Readers must see each row whole, old or new, while a writer republishes it.
// 1.2: a reservation grows the index (memory_bytes) and stores nothing; the
// reserved rows then go in and come back.
TEST(Data, ReserveMakesRoomAndStoresNothing) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(options(rb));
  ASSERT_NE(cache, nullptr) << last_error();
  set_rows(cache.get(), {1, 2, 3}, rb, 1, 1);
  kvzch_cache_info before{};
  before.struct_size = sizeof before;
  ASSERT_EQ(kvzch_cache_get_info(cache.get(), &before), KVZCH_STATUS_OK);

  ASSERT_EQ(kvzch_cache_reserve(cache.get(), 100000), KVZCH_STATUS_OK) << last_error();
  kvzch_cache_info reserved{};
  reserved.struct_size = sizeof reserved;
  ASSERT_EQ(kvzch_cache_get_info(cache.get(), &reserved), KVZCH_STATUS_OK);
  EXPECT_GT(reserved.memory_bytes, before.memory_bytes + 100000 * 12);
  EXPECT_EQ(reserved.rows, 3u);
  EXPECT_EQ(reserved.inserts, before.inserts);

  std::vector<int64_t> ids(100000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i) * 31 + 4;
  const std::vector<uint8_t> rows = rows_for(ids, rb, 2);
  ASSERT_EQ(kvzch_cache_batch_set(cache.get(), ids.data(), ids.size(), rows.data(), rows.size(), 2),
            KVZCH_STATUS_OK);
  std::vector<uint8_t> out(rows.size());
  kvzch_batch_stats stats{};
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids.data(), ids.size(), out.data(), out.size(),
                                  nullptr, &stats),
            KVZCH_STATUS_OK);
  EXPECT_EQ(stats.hits, ids.size());
  EXPECT_EQ(out, rows);
}

TEST(Data, NoTornRowsUnderConcurrentWrites) {
  const uint32_t rb = 256;
  const std::vector<int64_t> ids = first_ids(64);
  CachePtr cache = cache_holding(ids, rb, 0, 0);
  ASSERT_NE(cache, nullptr);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0};
  std::atomic<uint64_t> failed_calls{0};
  std::thread writer([&] {
    for (uint32_t version = 1; !stop.load(); ++version) {
      const std::vector<uint8_t> rows = rows_for(ids, rb, version);
      if (kvzch_cache_batch_set(cache.get(), ids.data(), ids.size(), rows.data(), rows.size(),
                                version) != KVZCH_STATUS_OK) {
        failed_calls.fetch_add(1);
      }
    }
  });
  // The versions (version * 7, mod 256) the reader saw: two or more mean the
  // reads did overlap the writes. The reader reads for 700 ms, and on until
  // it has seen two.
  std::bitset<256> versions_seen;
  std::thread reader([&] {
    std::vector<uint8_t> out(ids.size() * rb);
    const auto two_versions_seen = [&] { return versions_seen.count() >= 2; };
    run_rounds(std::chrono::milliseconds(700), two_versions_seen, [&](bool) {
      if (kvzch_cache_batch_get(cache.get(), ids.data(), ids.size(), out.data(), out.size(),
                                nullptr, nullptr) != KVZCH_STATUS_OK) {
        failed_calls.fetch_add(1);
      }
      for (size_t i = 0; i < ids.size(); ++i) {
        // fill_row's bytes depend on the version through the low byte of
        // version * 7, which byte 0 gives back (id byte 0 xor it): a whole
        // row is fill_row at that value in every byte.
        const uint8_t* row = out.data() + i * rb;
        const uint64_t id = static_cast<uint64_t>(ids[i]);
        const uint32_t version_times_7 = row[0] ^ static_cast<uint8_t>(id);
        versions_seen.set(version_times_7);
        for (uint32_t b = 1; b < rb; ++b) {
          const uint8_t id_byte = static_cast<uint8_t>(id >> (8 * (b % 8)));
          if (row[b] != static_cast<uint8_t>(id_byte ^ (version_times_7 + b * 31u))) {
            torn.fetch_add(1);
            break;
          }
        }
      }
    });
    stop.store(true);
  });
  reader.join();
  writer.join();
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(failed_calls.load(), 0u);
  EXPECT_GE(versions_seen.count(), 2u);
}

// ---------------------------------------------------------------- counters

TEST(Counters, ReadHitRateResetsCumulativeDoesNot) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2}, 8, 1, 1);
  const int64_t ids[] = {1, 2, 3};
  uint8_t out[24];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 3, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);

  kvzch_read_stats w = take_window(cache.get());
  EXPECT_EQ(w.hits, 2u);
  EXPECT_EQ(w.misses, 1u);
  EXPECT_EQ(w.total, 3u);
  w = take_window(cache.get());
  EXPECT_EQ(w.total, 0u);

  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 1, out, 8, nullptr, nullptr), KVZCH_STATUS_OK);
  kvzch_read_stats c1 = cumulative(cache.get());
  kvzch_read_stats c2 = cumulative(cache.get());
  EXPECT_EQ(c1.hits, 3u);
  EXPECT_EQ(c1.misses, 1u);
  EXPECT_EQ(c1.total, 4u);
  EXPECT_EQ(c2.total, c1.total) << "a cumulative read reset the counters";
  w = take_window(cache.get());
  EXPECT_EQ(w.hits, 1u);
  EXPECT_EQ(w.total, 1u);
  EXPECT_EQ(cumulative(cache.get()).total, 4u);
}

TEST(Counters, CountersArePerCache) {
  CachePtr a = make_cache(8);
  CachePtr b = make_cache(8);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const int64_t id = 1;
  uint8_t out[8];
  ASSERT_EQ(kvzch_cache_batch_get(a.get(), &id, 1, out, 8, nullptr, nullptr), KVZCH_STATUS_OK);
  EXPECT_EQ(cumulative(a.get()).total, 1u);
  EXPECT_EQ(cumulative(b.get()).total, 0u);
}

// Every batch has exactly 3 hits per miss. Two independent atomics (the
// upstream design) let a poller see a batch's hits without its misses, which
// breaks hits == 3 * misses; one indivisible snapshot never does. The
// lookups go on until the poller has taken kWindowsDuring windows that held
// batches, so the snapshots do race the lookups.
TEST(Counters, ConcurrentSnapshotsNeverSplitABatch) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  std::vector<int64_t> present(300);
  for (size_t i = 0; i < present.size(); ++i) present[i] = static_cast<int64_t>(i);
  set_rows(cache.get(), present, rb, 1, 1);

  const int kWorkers = 2;
  const int kBatchesPerWorker = 20000;
  const uint64_t kWindowsDuring = 100;
  std::atomic<int> running{kWorkers};
  std::atomic<bool> raced{false};
  std::atomic<uint64_t> lookups{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(static_cast<uint32_t>(w) + 1);
      std::vector<int64_t> ids;
      std::vector<uint8_t> out;
      for (int i = 0; i < kBatchesPerWorker || !raced.load(); ++i) {
        const size_t k = 1 + rng() % 25;  // 3k hits, k misses
        ids.clear();
        for (size_t h = 0; h < 3 * k; ++h) ids.push_back(present[rng() % present.size()]);
        for (size_t m = 0; m < k; ++m) ids.push_back(1000000 + static_cast<int64_t>(rng() % 1000));
        std::shuffle(ids.begin(), ids.end(), rng);
        out.resize(ids.size() * rb);
        if (kvzch_cache_batch_get(cache.get(), ids.data(), ids.size(), out.data(), out.size(),
                                  nullptr, nullptr) == KVZCH_STATUS_OK) {
          lookups.fetch_add(ids.size());
        }
      }
      running.fetch_sub(1);
    });
  }

  uint64_t window_sum = 0;
  uint64_t windows_during = 0;
  uint64_t poll_failures = 0;
  uint64_t bad_window = 0;
  uint64_t bad_cumulative = 0;
  uint64_t last_cumulative = 0;
  uint64_t cumulative_went_back = 0;
  // Returns the ids the window counted.
  auto poll = [&]() -> uint64_t {
    kvzch_read_stats w{};
    kvzch_read_stats c{};
    if (kvzch_cache_get_read_hit_rate_stats(cache.get(), &w) != KVZCH_STATUS_OK ||
        kvzch_cache_get_cumulative_read_stats(cache.get(), &c) != KVZCH_STATUS_OK) {
      ++poll_failures;
      return 0;
    }
    if (w.hits != 3 * w.misses || w.hits + w.misses != w.total) ++bad_window;
    if (c.hits != 3 * c.misses || c.hits + c.misses != c.total) ++bad_cumulative;
    if (c.total < last_cumulative) ++cumulative_went_back;
    last_cumulative = c.total;
    window_sum += w.total;
    return w.total;
  };
  while (running.load() > 0) {
    if (poll() > 0 && ++windows_during == kWindowsDuring) raced.store(true);
  }
  for (std::thread& t : workers) t.join();
  poll();  // drain the last window

  EXPECT_EQ(poll_failures, 0u);
  EXPECT_GE(windows_during, kWindowsDuring);
  EXPECT_EQ(bad_window, 0u) << "a read_hit_rate snapshot split a batch";
  EXPECT_EQ(bad_cumulative, 0u) << "a cumulative snapshot split a batch";
  EXPECT_EQ(cumulative_went_back, 0u);
  EXPECT_EQ(window_sum, lookups.load()) << "windows lost or double-counted a batch";
  EXPECT_EQ(cumulative(cache.get()).total, lookups.load());
}

// ---------------------------------------------------------------- sinks

struct Recorded {
  std::vector<std::string> tables;
  std::vector<kvzch_batch_stats> stats;
  std::vector<uint32_t> struct_sizes;
};

void record_event(void* user_data, const kvzch_batch_event* event) {
  Recorded* r = static_cast<Recorded*>(user_data);
  r->tables.emplace_back(event->table);
  r->stats.push_back(event->stats);
  r->struct_sizes.push_back(event->struct_size);
}

// duration_ns is the lookup's own wall time: above zero for a batch that
// takes a while, within the call's, and the same in *stats as in the event.
TEST(Sinks, BatchDurationIsTheLookupsWallTime) {
  const uint32_t rb = 64;
  const std::vector<int64_t> ids = first_ids(100000);
  CachePtr cache = cache_holding(ids, rb, 1, 1);
  ASSERT_NE(cache, nullptr);
  Recorded recorded;
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), record_event, &recorded, &id),
            KVZCH_STATUS_OK);
  std::vector<uint8_t> out(ids.size() * rb);
  kvzch_batch_stats stats{};
  const auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids.data(), ids.size(), out.data(), out.size(),
                                  nullptr, &stats),
            KVZCH_STATUS_OK);
  const auto call_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), id), KVZCH_STATUS_OK);
  EXPECT_GT(stats.duration_ns, 0u);
  EXPECT_LE(stats.duration_ns, static_cast<uint64_t>(call_ns));
  ASSERT_EQ(recorded.stats.size(), 1u);
  EXPECT_EQ(recorded.stats[0].duration_ns, stats.duration_ns);
  EXPECT_EQ(recorded.stats[0].hits, ids.size());
}

TEST(Sinks, CacheSinkSeesOwnCacheGlobalSinkSeesAll) {
  CachePtr alpha = make_cache(8, KVZCH_MISS_ZERO_FILL, "alpha");
  CachePtr beta = make_cache(8, KVZCH_MISS_ZERO_FILL, "beta");
  ASSERT_NE(alpha, nullptr);
  ASSERT_NE(beta, nullptr);
  set_rows(alpha.get(), {1}, 8, 1, 1);

  Recorded on_alpha;
  Recorded global;
  uint64_t alpha_id = 0;
  uint64_t global_id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(alpha.get(), record_event, &on_alpha, &alpha_id),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_register_global_stat_sink(record_event, &global, &global_id), KVZCH_STATUS_OK);

  const int64_t ids[] = {1, 2};
  uint8_t out[16];
  ASSERT_EQ(kvzch_cache_batch_get(alpha.get(), ids, 2, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_cache_batch_get(beta.get(), ids, 1, out, 8, nullptr, nullptr), KVZCH_STATUS_OK);
  // n == 0 is not a batch: no event.
  ASSERT_EQ(kvzch_cache_batch_get(alpha.get(), nullptr, 0, nullptr, 0, nullptr, nullptr),
            KVZCH_STATUS_OK);

  ASSERT_EQ(kvzch_cache_unregister_stat_sink(alpha.get(), alpha_id), KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_unregister_global_stat_sink(global_id), KVZCH_STATUS_OK);

  ASSERT_EQ(on_alpha.tables.size(), 1u);
  EXPECT_EQ(on_alpha.tables[0], "alpha");
  EXPECT_EQ(on_alpha.stats[0].hits, 1u);
  EXPECT_EQ(on_alpha.stats[0].misses, 1u);
  EXPECT_EQ(on_alpha.stats[0].total, 2u);
  EXPECT_GE(on_alpha.struct_sizes[0], sizeof(kvzch_batch_event));

  ASSERT_EQ(global.tables.size(), 2u);
  EXPECT_EQ(global.tables[0], "alpha");
  EXPECT_EQ(global.tables[1], "beta");
  EXPECT_EQ(global.stats[1].misses, 1u);
  EXPECT_EQ(global.stats[1].total, 1u);

  // Unregistered sinks stay silent.
  ASSERT_EQ(kvzch_cache_batch_get(alpha.get(), ids, 2, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_EQ(on_alpha.tables.size(), 1u);
  EXPECT_EQ(global.tables.size(), 2u);
}

// ABI order: counters, then *stats, then sinks. A sink therefore already sees
// its batch in the cumulative counters and in the caller's stats struct.
struct OrderProbe {
  kvzch_cache* cache;
  const kvzch_batch_stats* caller_stats;
  uint64_t cumulative_total = 0;
  uint64_t caller_total = 0;
  int calls = 0;
};

TEST(Sinks, RunAfterCountersAndStats) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  kvzch_batch_stats stats{};
  OrderProbe probe{cache.get(), &stats};
  auto sink = [](void* user_data, const kvzch_batch_event*) {
    OrderProbe* p = static_cast<OrderProbe*>(user_data);
    kvzch_read_stats c{};
    if (kvzch_cache_get_cumulative_read_stats(p->cache, &c) == KVZCH_STATUS_OK) {
      p->cumulative_total = c.total;
    }
    p->caller_total = p->caller_stats->total;
    ++p->calls;
  };
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), sink, &probe, &id), KVZCH_STATUS_OK);
  const int64_t ids[] = {1, 2, 3};
  uint8_t out[24];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 3, out, sizeof out, nullptr, &stats),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), id), KVZCH_STATUS_OK);
  EXPECT_EQ(probe.calls, 1);
  EXPECT_EQ(probe.cumulative_total, 3u);
  EXPECT_EQ(probe.caller_total, 3u);
}

struct Reentrant {
  kvzch_cache* cache;
  int depth = 0;
  int calls = 0;
  kvzch_status inner_status = KVZCH_STATUS_INTERNAL;
  bool inner_hit = false;
};

TEST(Sinks, SinkMayLookUpTheSameCache) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {7}, 8, 1, 1);
  Reentrant state{cache.get()};
  auto sink = [](void* user_data, const kvzch_batch_event*) {
    Reentrant* s = static_cast<Reentrant*>(user_data);
    ++s->calls;
    if (s->depth > 0) return;
    ++s->depth;
    const int64_t id = 7;
    uint8_t out[8];
    uint8_t mask = 0;
    s->inner_status = kvzch_cache_batch_get(s->cache, &id, 1, out, sizeof out, &mask, nullptr);
    s->inner_hit = mask == 1;
    --s->depth;
  };
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), sink, &state, &id), KVZCH_STATUS_OK);
  const int64_t key = 7;
  uint8_t out[8];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), id), KVZCH_STATUS_OK);
  EXPECT_EQ(state.inner_status, KVZCH_STATUS_OK);
  EXPECT_TRUE(state.inner_hit);
  EXPECT_EQ(state.calls, 2) << "the nested lookup is a batch too";
  EXPECT_EQ(cumulative(cache.get()).total, 2u);
}

struct SelfRemoving {
  kvzch_cache* cache;
  uint64_t id = 0;
  int calls = 0;
  kvzch_status unregister_status = KVZCH_STATUS_INTERNAL;
};

TEST(Sinks, SinkMayUnregisterItself) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  SelfRemoving state{cache.get()};
  auto sink = [](void* user_data, const kvzch_batch_event*) {
    SelfRemoving* s = static_cast<SelfRemoving*>(user_data);
    ++s->calls;
    s->unregister_status = kvzch_cache_unregister_stat_sink(s->cache, s->id);
  };
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), sink, &state, &state.id), KVZCH_STATUS_OK);
  const int64_t key = 1;
  uint8_t out[8];
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
              KVZCH_STATUS_OK);
  }
  EXPECT_EQ(state.calls, 1);
  EXPECT_EQ(state.unregister_status, KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), state.id), KVZCH_STATUS_NOT_FOUND);
}

TEST(Sinks, GlobalSinkMayUnregisterItself) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  SelfRemoving state{nullptr};
  auto sink = [](void* user_data, const kvzch_batch_event*) {
    SelfRemoving* s = static_cast<SelfRemoving*>(user_data);
    ++s->calls;
    s->unregister_status = kvzch_unregister_global_stat_sink(s->id);
  };
  ASSERT_EQ(kvzch_register_global_stat_sink(sink, &state, &state.id), KVZCH_STATUS_OK);
  const int64_t key = 1;
  uint8_t out[8];
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
              KVZCH_STATUS_OK);
  }
  EXPECT_EQ(state.calls, 1);
  EXPECT_EQ(state.unregister_status, KVZCH_STATUS_OK);
}

// A sink reads its own id from where registering wrote it, as SelfRemoving
// does: the library writes *out_id before any batch can call the sink, so
// even lookups already running on other threads find it there. Registering
// holds off their sink calls, which then start together right after it.
struct OwnId {
  uint64_t id = 0;
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> calls_without_id{0};
};

// The library promises that registering a sink happens before its first
// call, and every call before unregister returns, but keeps those promises
// with its own atomics, which ThreadSanitizer cannot see (libkvzch is not
// instrumented). The tests whose sinks' state is made and freed while
// lookups run restate both edges where TSan sees them: the owner calls
// publish_sink_state() after making a state, and each call enter_sink()
// first; each call's last touch of its state is a release on its `calls`,
// which the owner acquires after unregister returns and before it frees the
// state.
std::atomic<uint64_t> g_sink_states_published{0};

void publish_sink_state() { g_sink_states_published.fetch_add(1, std::memory_order_release); }

void enter_sink() { static_cast<void>(g_sink_states_published.load(std::memory_order_acquire)); }

void own_id_sink(void* user_data, const kvzch_batch_event*) {
  enter_sink();
  OwnId* s = static_cast<OwnId*>(user_data);
  if (s->id == 0) s->calls_without_id.fetch_add(1);
  s->calls.fetch_add(1, std::memory_order_release);
}

// `count` threads looking up id 1 of an 8-byte-row cache back to back, from
// construction (which returns once they have made 1000 batches) until stop().
class LookupThreads {
 public:
  LookupThreads(kvzch_cache* cache, int count) {
    for (int t = 0; t < count; ++t) {
      threads_.emplace_back([this, cache] {
        const int64_t key = 1;
        uint8_t out[8];
        while (!stop_.load()) {
          kvzch_cache_batch_get(cache, &key, 1, out, sizeof out, nullptr, nullptr);
          batches_.fetch_add(1);
        }
      });
    }
    while (batches_.load() < 1000) std::this_thread::yield();
  }
  LookupThreads(const LookupThreads&) = delete;
  LookupThreads& operator=(const LookupThreads&) = delete;
  ~LookupThreads() { stop(); }

  // Returns once every thread has made its last batch.
  void stop() {
    stop_.store(true);
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> batches_{0};
  std::vector<std::thread> threads_;
};

void sinks_find_their_id_while_batches_run(bool global) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  LookupThreads lookups(cache.get(), 4);
  uint64_t calls = 0;
  uint64_t calls_without_id = 0;
  uint64_t rounds_called = 0;
  uint64_t failures = 0;
  // Rounds back to back for a second: the lookups that saw the last sink
  // queue for the next one and call it as soon as it is registered. A
  // library that wrote the id after registering failed every run here (10
  // idle, 8 under ctest -j2). But the registering thread can also take the
  // registry's lock back before any queued lookup gets it, round after round
  // (one ThreadSanitizer run saw no call in its whole second): past the
  // second, rounds wait a little for a call before they unregister, until
  // one has been called. Waiting rounds rarely catch that library (the
  // lookups no longer queue), so they only make sure something was checked.
  const auto a_round_called = [&] { return rounds_called > 0; };
  run_rounds(std::chrono::seconds(1), a_round_called, [&](bool waiting_for_a_call) {
    OwnId state;
    publish_sink_state();
    const kvzch_status registered =
        global ? kvzch_register_global_stat_sink(own_id_sink, &state, &state.id)
               : kvzch_cache_register_stat_sink(cache.get(), own_id_sink, &state, &state.id);
    if (waiting_for_a_call) {
      const auto wait_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
      while (state.calls.load(std::memory_order_acquire) == 0 &&
             std::chrono::steady_clock::now() < wait_until) {
        std::this_thread::yield();
      }
    }
    const uint64_t id = state.id;
    const kvzch_status unregistered =
        global ? kvzch_unregister_global_stat_sink(id) : kvzch_cache_unregister_stat_sink(cache.get(), id);
    failures += registered != KVZCH_STATUS_OK || unregistered != KVZCH_STATUS_OK;
    calls += state.calls.load();
    calls_without_id += state.calls_without_id.load();
    rounds_called += state.calls.load() > 0;
  });
  lookups.stop();
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(calls_without_id, 0u) << "of " << calls << " calls";
  EXPECT_GT(rounds_called, 0u) << "no sink was called while registered: nothing was checked";
}

// A sink state that the library frees through the 1.3 release callback,
// while lookups run on other threads; restates the edges as own_id_sink does,
// and the release acquires what the calls' last touches released. The round's
// id lives on the registering thread, which cannot acquire a state that may
// be freed: each call ends with a release on g_releasing_calls_returned too,
// which that thread acquires once its unregister returns.
struct ReleasedState {
  const uint64_t* id;  // the round's id, on the registering thread's stack
  kvzch_cache* cache;
  bool unregister_itself;
  std::atomic<bool> unregistered{false};
  std::atomic<uint64_t> calls{0};
};

std::atomic<uint64_t> g_states_released{0};
std::atomic<uint64_t> g_releasing_calls_returned{0};

void releasing_sink(void* user_data, const kvzch_batch_event*) {
  enter_sink();
  ReleasedState* s = static_cast<ReleasedState*>(user_data);
  if (s->unregister_itself && !s->unregistered.exchange(true)) {
    kvzch_cache_unregister_stat_sink(s->cache, *s->id);
  }
  g_releasing_calls_returned.fetch_add(1, std::memory_order_release);
  s->calls.fetch_add(1, std::memory_order_release);
}

void free_released_state(void* user_data) {
  ReleasedState* s = static_cast<ReleasedState*>(user_data);
  static_cast<void>(s->calls.load(std::memory_order_acquire));
  g_states_released.fetch_add(1);
  delete s;
}

// Each state is freed by its release, once: after its unregister from
// outside, or after it unregistered itself on one thread while others may
// still be inside it. The ASan and TSan builds see any call that touches a
// freed state; every build counts the releases.
TEST(Sinks, AReleaseFreesUserDataOnceAfterTheLastCallOnEveryThread) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  LookupThreads lookups(cache.get(), 3);
  const uint64_t released_before = g_states_released.load();
  uint64_t rounds = 0;
  uint64_t failures = 0;
  uint64_t self_unregistered = 0;
  run_rounds(std::chrono::milliseconds(500), [] { return true; }, [&](bool) {
    uint64_t id = 0;
    auto* state = new ReleasedState{&id, cache.get(), rounds % 2 == 0};
    publish_sink_state();
    if (kvzch_cache_register_stat_sink_with_release(cache.get(), releasing_sink, state,
                                                    free_released_state, &id) != KVZCH_STATUS_OK) {
      ++failures;
      delete state;
      return;
    }
    ++rounds;
    // Let the lookups call it a while (and, every other round, the sink end
    // itself); the state may be freed from here on, so it is not touched.
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    const kvzch_status status = kvzch_cache_unregister_stat_sink(cache.get(), id);
    static_cast<void>(g_releasing_calls_returned.load(std::memory_order_acquire));
    self_unregistered += status == KVZCH_STATUS_NOT_FOUND;
    failures += status != KVZCH_STATUS_OK && status != KVZCH_STATUS_NOT_FOUND;
  });
  lookups.stop();
  EXPECT_EQ(failures, 0u);
  EXPECT_GT(self_unregistered, 0u) << "no sink unregistered itself: nothing of that was checked";
  EXPECT_EQ(g_states_released.load() - released_before, rounds) << "each state released once";
}

TEST(Sinks, ASinkFindsItsIdFromItsFirstCall) { sinks_find_their_id_while_batches_run(false); }

TEST(Sinks, AGlobalSinkFindsItsIdFromItsFirstCall) { sinks_find_their_id_while_batches_run(true); }

// Calls made after unregister returned; global so that it outlives the state
// the sink is given, which the test frees while batches still run.
std::atomic<uint64_t> g_calls_after_unregister{0};

struct Watched {
  std::atomic<bool> unregistered{false};
  std::atomic<int> running{0};
  std::atomic<uint64_t> calls{0};
};

void watched_sink(void* user_data, const kvzch_batch_event*) {
  Watched* w = static_cast<Watched*>(user_data);
  w->running.fetch_add(1);
  if (w->unregistered.load()) g_calls_after_unregister.fetch_add(1);
  w->calls.fetch_add(1);
  // Stay inside a while so that unregister has a running call to wait for.
  std::this_thread::sleep_for(std::chrono::microseconds(200));
  if (w->unregistered.load()) g_calls_after_unregister.fetch_add(1);
  w->running.fetch_sub(1);
}

void unregister_while_batches_run(bool global) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  Watched* watched = new Watched;
  uint64_t id = 0;
  ASSERT_EQ(global ? kvzch_register_global_stat_sink(watched_sink, watched, &id)
                   : kvzch_cache_register_stat_sink(cache.get(), watched_sink, watched, &id),
            KVZCH_STATUS_OK);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> failed_calls{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t) {
    workers.emplace_back([&] {
      const int64_t key = 1;
      uint8_t out[8];
      while (!stop.load()) {
        if (kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr) !=
            KVZCH_STATUS_OK) {
          failed_calls.fetch_add(1);
        }
      }
    });
  }
  while (watched->calls.load() < 50) std::this_thread::yield();
  // Unregister right after a call was seen running, so that it most likely
  // has one to wait for (each call stays 200 us, and two threads make them
  // back to back).
  while (watched->running.load() == 0) std::this_thread::yield();

  const kvzch_status status =
      global ? kvzch_unregister_global_stat_sink(id) : kvzch_cache_unregister_stat_sink(cache.get(), id);
  const int running_at_return = watched->running.load();
  watched->unregistered.store(true);
  EXPECT_EQ(status, KVZCH_STATUS_OK);
  EXPECT_EQ(running_at_return, 0) << "unregister returned while the sink was running";

  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  delete watched;  // the ABI allows this as soon as unregister returned
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop.store(true);
  for (std::thread& t : workers) t.join();
  EXPECT_EQ(g_calls_after_unregister.load(), 0u);
  EXPECT_EQ(failed_calls.load(), 0u);
}

TEST(Sinks, UnregisterFromAnotherThreadWaitsForRunningCalls) {
  g_calls_after_unregister.store(0);
  unregister_while_batches_run(false);
}

TEST(Sinks, GlobalUnregisterFromAnotherThreadWaitsForRunningCalls) {
  g_calls_after_unregister.store(0);
  unregister_while_batches_run(true);
}

// Two sinks, each unregistering the other from inside itself on two threads:
// waiting for each other would never end, so one unregister answers
// WOULD_DEADLOCK and leaves its sink registered, and the other succeeds.
struct Mutual {
  kvzch_cache* other_cache = nullptr;
  std::atomic<uint64_t>* other_id = nullptr;
  std::mutex* mutex = nullptr;
  std::condition_variable* both_inside = nullptr;
  int* inside = nullptr;
  std::atomic<int> calls{0};
  std::atomic<int> answer{-1};
};

void mutual_sink(void* user_data, const kvzch_batch_event*) {
  Mutual* m = static_cast<Mutual*>(user_data);
  if (m->calls.fetch_add(1) != 0) return;
  {
    std::unique_lock<std::mutex> lock(*m->mutex);
    ++*m->inside;
    m->both_inside->notify_all();
    m->both_inside->wait(lock, [m] { return *m->inside == 2; });
  }
  m->answer.store(kvzch_cache_unregister_stat_sink(m->other_cache, m->other_id->load()));
}

TEST(Sinks, TwoSinksUnregisteringEachOtherDoNotDeadlock) {
  CachePtr a = make_cache(8);
  CachePtr b = make_cache(8);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::mutex mutex;
  std::condition_variable both_inside;
  int inside = 0;
  std::atomic<uint64_t> id_a{0}, id_b{0};
  Mutual on_a, on_b;
  on_a.other_cache = b.get();
  on_a.other_id = &id_b;
  on_b.other_cache = a.get();
  on_b.other_id = &id_a;
  for (Mutual* m : {&on_a, &on_b}) {
    m->mutex = &mutex;
    m->both_inside = &both_inside;
    m->inside = &inside;
  }
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(a.get(), mutual_sink, &on_a, &id), KVZCH_STATUS_OK);
  id_a.store(id);
  ASSERT_EQ(kvzch_cache_register_stat_sink(b.get(), mutual_sink, &on_b, &id), KVZCH_STATUS_OK);
  id_b.store(id);
  auto look_up = [](kvzch_cache* cache) {
    const int64_t key = 1;
    uint8_t out[8];
    EXPECT_EQ(kvzch_cache_batch_get(cache, &key, 1, out, sizeof out, nullptr, nullptr),
              KVZCH_STATUS_OK);
  };
  std::thread on_thread_a(look_up, a.get());
  std::thread on_thread_b(look_up, b.get());
  on_thread_a.join();
  on_thread_b.join();

  const bool a_refused = on_a.answer.load() == KVZCH_STATUS_WOULD_DEADLOCK;
  const bool b_refused = on_b.answer.load() == KVZCH_STATUS_WOULD_DEADLOCK;
  ASSERT_NE(a_refused, b_refused) << on_a.answer.load() << " " << on_b.answer.load();
  EXPECT_EQ((a_refused ? on_b : on_a).answer.load(), KVZCH_STATUS_OK);
  // The refused unregister left its target registered: that sink still runs.
  Mutual& kept = a_refused ? on_b : on_a;
  Mutual& gone = a_refused ? on_a : on_b;
  look_up(a.get());
  look_up(b.get());
  EXPECT_EQ(kept.calls.load(), 2);
  EXPECT_EQ(gone.calls.load(), 1);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(a_refused ? b.get() : a.get(), a_refused ? id_b : id_a),
            KVZCH_STATUS_OK);
}

// A sink that blocks holds up only the batch that called it: sinks run
// outside every lock of the library, so meanwhile another thread's calls on
// the same cache (lookups, publishes, removals, counters, info, compaction,
// sink registrations) all complete. The blocked sink waits for that thread
// to say it is done, a handshake rather than a timed sleep; its wait has a
// limit only so that a library that does serialize fails the test instead
// of hanging it.
struct Blocker {
  std::mutex mutex;
  std::condition_variable changed;
  std::thread::id blocking_thread;  // the one thread whose batch blocks
  bool blocked = false;
  bool others_done = false;
  bool released_by_others = false;  // the wait ended by the handshake, not the limit
};

void blocking_sink(void* user_data, const kvzch_batch_event*) {
  Blocker* b = static_cast<Blocker*>(user_data);
  std::unique_lock<std::mutex> lock(b->mutex);
  if (std::this_thread::get_id() != b->blocking_thread || b->blocked) return;
  b->blocked = true;
  b->changed.notify_all();
  b->released_by_others =
      b->changed.wait_for(lock, std::chrono::seconds(60), [b] { return b->others_done; });
}

constexpr uint32_t kBlockedRowBytes = 8;

// What another thread does on the cache while the sink blocks; it must all
// complete.
void calls_while_a_sink_blocks(kvzch_cache* cache) {
  const uint32_t rb = kBlockedRowBytes;
  const int64_t ids[] = {1, 2, 3, 4};
  uint8_t out[4 * rb];
  uint8_t mask[4];
  kvzch_batch_stats stats{};
  EXPECT_EQ(kvzch_cache_batch_get(cache, ids, 4, out, sizeof out, mask, &stats), KVZCH_STATUS_OK);
  EXPECT_EQ(stats.hits, 3u);
  EXPECT_TRUE(row_equals(out + rb, rb, 2, 1));
  set_rows(cache, {4}, rb, 2, 11);
  uint64_t removed = 0;
  EXPECT_EQ(kvzch_cache_batch_remove(cache, ids + 2, 1, &removed), KVZCH_STATUS_OK);
  EXPECT_EQ(removed, 1u);
  uint64_t evicted = 0;
  EXPECT_EQ(kvzch_cache_evict_older_than(cache, 11, &evicted), KVZCH_STATUS_OK);
  EXPECT_EQ(evicted, 2u);
  EXPECT_EQ(kvzch_cache_compact(cache), KVZCH_STATUS_OK);
  EXPECT_EQ(rows_in(cache), 1u);
  kvzch_read_stats window{};
  EXPECT_EQ(kvzch_cache_get_read_hit_rate_stats(cache, &window), KVZCH_STATUS_OK);
  EXPECT_EQ(window.total, 5u) << "the blocked batch was counted before its sinks ran";
  Recorded r;
  uint64_t other = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache, record_event, &r, &other), KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_batch_get(cache, ids + 3, 1, out, rb, mask, nullptr), KVZCH_STATUS_OK);
  EXPECT_EQ(mask[0], 1);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache, other), KVZCH_STATUS_OK);
  EXPECT_EQ(r.tables.size(), 1u);
}

void blocked_sink_delays_only_its_batch(bool global) {
  CachePtr cache = make_cache(kBlockedRowBytes);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2, 3}, kBlockedRowBytes, 1, 10);
  Blocker b;
  uint64_t id = 0;
  ASSERT_EQ(global ? kvzch_register_global_stat_sink(blocking_sink, &b, &id)
                   : kvzch_cache_register_stat_sink(cache.get(), blocking_sink, &b, &id),
            KVZCH_STATUS_OK);

  kvzch_status blocked_status = KVZCH_STATUS_INTERNAL;
  std::thread blocked([&] {
    {
      std::lock_guard<std::mutex> lock(b.mutex);
      b.blocking_thread = std::this_thread::get_id();
    }
    const int64_t key = 1;
    uint8_t out[kBlockedRowBytes];
    blocked_status = kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr);
  });
  bool sink_ran = false;
  {
    std::unique_lock<std::mutex> lock(b.mutex);
    sink_ran = b.changed.wait_for(lock, std::chrono::seconds(60), [&] { return b.blocked; });
  }
  if (sink_ran) calls_while_a_sink_blocks(cache.get());
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    b.others_done = true;
  }
  b.changed.notify_all();
  blocked.join();

  EXPECT_TRUE(sink_ran) << "the sink never ran";
  EXPECT_TRUE(b.released_by_others) << "the other thread's calls waited for the blocked sink";
  EXPECT_EQ(blocked_status, KVZCH_STATUS_OK);
  EXPECT_EQ(global ? kvzch_unregister_global_stat_sink(id)
                   : kvzch_cache_unregister_stat_sink(cache.get(), id),
            KVZCH_STATUS_OK);
}

TEST(Sinks, BlockedSinkDelaysOnlyItsOwnBatch) { blocked_sink_delays_only_its_batch(false); }

TEST(Sinks, BlockedGlobalSinkDelaysOnlyItsOwnBatch) { blocked_sink_delays_only_its_batch(true); }

// ---------------------------------------------------------------- concurrency

// Every kind of call at once on one cache from threads of the host: lookups,
// publishes, removals, evictions, compaction, both counter reads, and sinks
// (cache and global) registered and unregistered while batches call them.
// Each 8-byte word of a row holds its id and version, so a torn or misplaced
// row shows. Bounded by counts, not by time: the readers go on until each
// of them has run its batches and every other thread its rounds. At the end the
// readers' batch stats, the counters, the summed windows and two sinks that
// stayed registered all agree, and the info counters add up.
constexpr uint32_t kWordsPerRow = 8;
constexpr int64_t kKeySpace = 512;

uint64_t row_word(int64_t id, uint64_t version) {
  return static_cast<uint64_t>(id) << 32 | (version & 0xFFFFFFFFu);
}

struct Churned {
  static constexpr uint64_t kAlive = 0x5a5a5a5a5a5a5a5a;
  std::atomic<uint64_t> magic{kAlive};
  std::atomic<uint64_t> calls{0};
};

// Sinks that ran on state their registration no longer owned.
std::atomic<uint64_t> g_churn_violations{0};

// Restates the library's edges for TSan as own_id_sink does (above).
void churned_sink(void* user_data, const kvzch_batch_event*) {
  enter_sink();
  Churned* c = static_cast<Churned*>(user_data);
  if (c->magic.load(std::memory_order_relaxed) != Churned::kAlive) g_churn_violations.fetch_add(1);
  c->calls.fetch_add(1, std::memory_order_release);
}

struct Totals {
  const char* table;
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> total{0};
};

void totals_sink(void* user_data, const kvzch_batch_event* event) {
  Totals* t = static_cast<Totals*>(user_data);
  if (std::strcmp(event->table, t->table) != 0) return;
  t->batches.fetch_add(1);
  t->hits.fetch_add(event->stats.hits);
  t->total.fetch_add(event->stats.total);
}

TEST(Concurrency, EveryKindOfCallAtOnceOnOneCache) {
  const uint32_t rb = kWordsPerRow * sizeof(uint64_t);
  const char* table = "everything_at_once";
  CachePtr cache = make_cache(rb, KVZCH_MISS_ZERO_FILL, table);
  ASSERT_NE(cache, nullptr);
  kvzch_cache* c = cache.get();
  Totals on_cache{table};
  Totals on_all{table};
  uint64_t cache_sink = 0;
  uint64_t global_sink = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(c, totals_sink, &on_cache, &cache_sink),
            KVZCH_STATUS_OK);
  ASSERT_EQ(kvzch_register_global_stat_sink(totals_sink, &on_all, &global_sink), KVZCH_STATUS_OK);
  g_churn_violations.store(0);

  const int kReaders = 2;
  const int kBatchesPerReader = 1500;
  const uint64_t kRoundsPerOtherThread = 100;
  const size_t kBatch = 32;
  std::atomic<int> readers_left{kReaders};
  std::atomic<int> quotas_left{4};  // the threads below that have not run their rounds
  std::atomic<uint64_t> failed_calls{0};
  std::atomic<uint64_t> torn{0};
  std::atomic<uint64_t> misplaced{0};
  std::atomic<uint64_t> read_batches{0};
  std::atomic<uint64_t> read_hits{0};
  std::atomic<uint64_t> read_total{0};
  std::atomic<uint32_t> latest_timestamp{0};
  auto check = [&](kvzch_status status) {
    if (status != KVZCH_STATUS_OK) failed_calls.fetch_add(1);
  };
  auto running = [&] { return readers_left.load() > 0; };
  auto round_done = [&](uint64_t round) {
    if (round + 1 == kRoundsPerOtherThread) quotas_left.fetch_sub(1);
  };

  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(static_cast<uint64_t>(r) + 1);
      std::vector<int64_t> ids(kBatch);
      std::vector<uint64_t> out(kBatch * kWordsPerRow);
      std::vector<uint8_t> mask(kBatch);
      for (int i = 0; i < kBatchesPerReader || quotas_left.load() > 0; ++i) {
        for (int64_t& id : ids) id = static_cast<int64_t>(rng() % kKeySpace);
        kvzch_batch_stats stats{};
        check(kvzch_cache_batch_get(c, ids.data(), ids.size(), out.data(), kBatch * rb, mask.data(),
                                    &stats));
        uint64_t hits = 0;
        for (size_t k = 0; k < kBatch; ++k) {
          const uint64_t* row = &out[k * kWordsPerRow];
          const uint64_t expected_first = mask[k] ? row_word(ids[k], row[0]) : 0;
          if (row[0] != expected_first) misplaced.fetch_add(1);
          for (uint32_t w = 1; w < kWordsPerRow; ++w) {
            if (row[w] != row[0]) {
              torn.fetch_add(1);
              break;
            }
          }
          hits += mask[k];
        }
        if (hits != stats.hits || stats.total != kBatch) misplaced.fetch_add(1);
        read_batches.fetch_add(1);
        read_hits.fetch_add(stats.hits);
        read_total.fetch_add(stats.total);
      }
      readers_left.fetch_sub(1);
    });
  }
  threads.emplace_back([&] {  // publisher
    std::mt19937_64 rng(100);
    std::vector<int64_t> ids(64);
    std::vector<uint64_t> rows(ids.size() * kWordsPerRow);
    for (uint32_t version = 1; running(); ++version) {
      for (size_t k = 0; k < ids.size(); ++k) {
        ids[k] = static_cast<int64_t>(rng() % kKeySpace);
        for (uint32_t w = 0; w < kWordsPerRow; ++w) {
          rows[k * kWordsPerRow + w] = row_word(ids[k], version);
        }
      }
      check(kvzch_cache_batch_set(c, ids.data(), ids.size(), rows.data(), ids.size() * rb,
                                  version));
      latest_timestamp.store(version);
      round_done(version - 1);
    }
  });
  threads.emplace_back([&] {  // removals, evictions, compaction, reservations
    std::mt19937_64 rng(200);
    for (uint64_t round = 0; running(); ++round) {
      int64_t ids[8];
      for (int64_t& id : ids) id = static_cast<int64_t>(rng() % kKeySpace);
      check(kvzch_cache_batch_remove(c, ids, 8, nullptr));
      const uint32_t latest = latest_timestamp.load();
      if (latest > 20) check(kvzch_cache_evict_older_than(c, latest - 20, nullptr));
      if (round % 16 == 0) check(kvzch_cache_compact(c));
      if (round % 16 == 8) check(kvzch_cache_reserve(c, kKeySpace));
      round_done(round);
      std::this_thread::yield();
    }
  });
  // Calls the churned sinks received: when none was called, the check that
  // none ran after its unregister returned checked nothing.
  std::atomic<uint64_t> churned_calls{0};
  threads.emplace_back([&] {  // sinks coming and going while batches call them
    for (uint64_t round = 0; running(); ++round) {
      Churned* state = new Churned;
      publish_sink_state();
      const bool global = round % 2 == 1;
      uint64_t id = 0;
      check(global ? kvzch_register_global_stat_sink(churned_sink, state, &id)
                   : kvzch_cache_register_stat_sink(c, churned_sink, state, &id));
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      check(global ? kvzch_unregister_global_stat_sink(id)
                   : kvzch_cache_unregister_stat_sink(c, id));
      churned_calls.fetch_add(state->calls.load(std::memory_order_acquire));
      state->magic.store(0, std::memory_order_relaxed);
      delete state;
      round_done(round);
    }
  });
  uint64_t window_sum = 0;
  uint64_t inconsistent_snapshots = 0;
  threads.emplace_back([&] {  // both kinds of counter readers
    uint64_t last_total = 0;
    for (uint64_t round = 0; running(); ++round) {
      kvzch_read_stats w{};
      kvzch_read_stats cum{};
      check(kvzch_cache_get_read_hit_rate_stats(c, &w));
      check(kvzch_cache_get_cumulative_read_stats(c, &cum));
      // get_info is one snapshot too, taken while the other threads publish,
      // remove, evict and compact: its rows always add up.
      kvzch_cache_info info{};
      info.struct_size = sizeof info;
      check(kvzch_cache_get_info(c, &info));
      window_sum += w.total;
      if (w.hits + w.misses != w.total || cum.hits + cum.misses != cum.total ||
          cum.total < last_total ||
          info.rows != info.inserts - info.removals - info.expirations ||
          info.capacity_evictions != 0 || info.rows > static_cast<uint64_t>(kKeySpace)) {
        ++inconsistent_snapshots;
      }
      last_total = cum.total;
      round_done(round);
      std::this_thread::yield();
    }
  });
  for (std::thread& t : threads) t.join();

  kvzch_read_stats last_window{};
  ASSERT_EQ(kvzch_cache_get_read_hit_rate_stats(c, &last_window), KVZCH_STATUS_OK);
  window_sum += last_window.total;
  const kvzch_read_stats cum = cumulative(c);
  EXPECT_EQ(failed_calls.load(), 0u);
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(misplaced.load(), 0u);
  EXPECT_EQ(g_churn_violations.load(), 0u) << "a sink ran after its unregister returned";
  EXPECT_GT(churned_calls.load(), 0u);
  EXPECT_EQ(inconsistent_snapshots, 0u);
  EXPECT_GE(read_batches.load(), static_cast<uint64_t>(kReaders) * kBatchesPerReader);
  EXPECT_EQ(cum.total, read_total.load());
  EXPECT_EQ(cum.hits, read_hits.load());
  EXPECT_EQ(window_sum, cum.total) << "the windows lost or double-counted a batch";
  EXPECT_EQ(on_cache.batches.load(), read_batches.load());
  EXPECT_EQ(on_cache.total.load(), cum.total);
  EXPECT_EQ(on_cache.hits.load(), cum.hits);
  EXPECT_EQ(on_all.batches.load(), read_batches.load());
  EXPECT_EQ(on_all.total.load(), cum.total);

  kvzch_cache_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(kvzch_cache_get_info(c, &info), KVZCH_STATUS_OK);
  EXPECT_LE(info.rows, static_cast<uint64_t>(kKeySpace));
  EXPECT_EQ(info.rows, info.inserts - info.removals - info.expirations - info.capacity_evictions)
      << "inserts " << info.inserts << ", removals " << info.removals << ", expirations "
      << info.expirations << ", capacity evictions " << info.capacity_evictions;
  EXPECT_EQ(kvzch_unregister_global_stat_sink(global_sink), KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(c, cache_sink), KVZCH_STATUS_OK);
}

// ---------------------------------------------------------------- arguments
// (Bad arguments of every function: bad_input_test.cpp.)

TEST(Arguments, EmptyBatchesWithNullPointersAreOk) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), nullptr, 0, nullptr, 0, 1), KVZCH_STATUS_OK);
  // "n == 0 does nothing": ABI.md allows leaving the out-params as they were
  // or reporting an empty batch; anything else would be a bogus count.
  kvzch_batch_stats stats;
  std::memset(&stats, 0xFF, sizeof stats);
  const kvzch_batch_stats untouched_stats = stats;
  EXPECT_EQ(kvzch_cache_batch_get(cache.get(), nullptr, 0, nullptr, 0, nullptr, &stats),
            KVZCH_STATUS_OK);
  EXPECT_TRUE(std::memcmp(&stats, &untouched_stats, sizeof stats) == 0 ||
              (stats.hits == 0 && stats.misses == 0 && stats.total == 0))
      << stats.hits << " " << stats.misses << " " << stats.total;
  uint64_t removed = 5;
  EXPECT_EQ(kvzch_cache_batch_remove(cache.get(), nullptr, 0, &removed), KVZCH_STATUS_OK);
  EXPECT_TRUE(removed == 5 || removed == 0) << removed;
  EXPECT_EQ(rows_in(cache.get()), 0u);
  EXPECT_EQ(cumulative(cache.get()).total, 0u);
}

// ---------------------------------------------------------------- version, features, errors

TEST(Version, AbiVersionAndSemver) {
  EXPECT_EQ(KVZCH_ABI_MAJOR, 1);
  const uint32_t v = kvzch_abi_version();
  EXPECT_EQ(v >> 16, 1u);
  EXPECT_GE(v & 0xFFFFu, static_cast<uint32_t>(KVZCH_ABI_MINOR));
  ASSERT_NE(kvzch_version(), nullptr);
  EXPECT_STREQ(kvzch_version(), KVZCH_EXPECTED_VERSION);
}

TEST(Version, StatusNames) {
  const struct {
    kvzch_status status;
    const char* name;
  } names[] = {
      {KVZCH_STATUS_OK, "OK"},
      {KVZCH_STATUS_NULL_ARGUMENT, "NULL_ARGUMENT"},
      {KVZCH_STATUS_INVALID_ARGUMENT, "INVALID_ARGUMENT"},
      {KVZCH_STATUS_OUT_OF_MEMORY, "OUT_OF_MEMORY"},
      {KVZCH_STATUS_CAPACITY_EXCEEDED, "CAPACITY_EXCEEDED"},
      {KVZCH_STATUS_NOT_FOUND, "NOT_FOUND"},
      {KVZCH_STATUS_UNSUPPORTED, "UNSUPPORTED"},
      {KVZCH_STATUS_WOULD_DEADLOCK, "WOULD_DEADLOCK"},
      {KVZCH_STATUS_INTERNAL, "INTERNAL"},
  };
  for (const auto& n : names) EXPECT_STREQ(kvzch_status_name(n.status), n.name);
  EXPECT_STREQ(kvzch_status_name(static_cast<kvzch_status>(99)), "UNKNOWN");
}

TEST(Version, StatusValuesAreTheContract) {
  EXPECT_EQ(KVZCH_STATUS_OK, 0);
  EXPECT_EQ(KVZCH_STATUS_NULL_ARGUMENT, 1);
  EXPECT_EQ(KVZCH_STATUS_INVALID_ARGUMENT, 2);
  EXPECT_EQ(KVZCH_STATUS_OUT_OF_MEMORY, 3);
  EXPECT_EQ(KVZCH_STATUS_CAPACITY_EXCEEDED, 4);
  EXPECT_EQ(KVZCH_STATUS_NOT_FOUND, 5);
  EXPECT_EQ(KVZCH_STATUS_UNSUPPORTED, 6);
  EXPECT_EQ(KVZCH_STATUS_WOULD_DEADLOCK, 7);
  EXPECT_EQ(KVZCH_STATUS_INTERNAL, 8);
  EXPECT_EQ(KVZCH_MISS_ZERO_FILL, 0);
  EXPECT_EQ(KVZCH_MISS_LEAVE_UNTOUCHED, 1);
  EXPECT_EQ(KVZCH_STAT_READ_HIT_COUNT, 0);
  EXPECT_EQ(KVZCH_STAT_READ_MISS_COUNT, 1);
  EXPECT_EQ(KVZCH_STAT_READ_TOTAL_COUNT, 2);
}

TEST(Version, StatNames) {
  EXPECT_STREQ(kvzch_stat_name(KVZCH_STAT_READ_HIT_COUNT), "kvzch.inference.read_hit_count");
  EXPECT_STREQ(kvzch_stat_name(KVZCH_STAT_READ_MISS_COUNT), "kvzch.inference.read_miss_count");
  EXPECT_STREQ(kvzch_stat_name(KVZCH_STAT_READ_TOTAL_COUNT), "kvzch.inference.read_total_count");
  EXPECT_EQ(kvzch_stat_name(3), nullptr);
  EXPECT_EQ(kvzch_stat_name(UINT32_MAX), nullptr);
}

TEST(Version, Features) {
  for (const char* name : {"read_hit_rate_stats", "cumulative_read_stats", "stat_sink",
                           "global_stat_sink", "evict_older_than", "batch_remove", "plugin_api_v1",
                           "capacity_eviction", "compact", "cache_info_counters",
                           "options_init_sized", "reserve", "stat_sink_release"}) {
    EXPECT_TRUE(kvzch_has_feature(name)) << name;
  }
  EXPECT_FALSE(kvzch_has_feature("nope"));
  EXPECT_FALSE(kvzch_has_feature(""));
  EXPECT_FALSE(kvzch_has_feature("stat_sink "));
  EXPECT_FALSE(kvzch_has_feature(nullptr));
}

TEST(LastError, NamesTheArgumentAndTruncates) {
  CachePtr cache = make_cache(64);
  ASSERT_NE(cache, nullptr);
  const int64_t ids[] = {1, 2};
  uint8_t out[128];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), ids, 2, out, 100, nullptr, nullptr),
            KVZCH_STATUS_INVALID_ARGUMENT);

  const size_t full = kvzch_last_error_message(nullptr, 0);
  ASSERT_GT(full, 8u);
  const std::string message = last_error();
  EXPECT_EQ(message.size(), full);
  EXPECT_NE(message.find("out_len"), std::string::npos) << message;
  EXPECT_NE(message.find("100"), std::string::npos) << "the value is not named: " << message;

  char small[6];
  std::memset(small, 'X', sizeof small);
  EXPECT_EQ(kvzch_last_error_message(small, 5), full);
  EXPECT_EQ(std::string(small), message.substr(0, 4));
  EXPECT_EQ(small[5], 'X') << "wrote past len";

  char one = 'X';
  EXPECT_EQ(kvzch_last_error_message(&one, 1), full);
  EXPECT_EQ(one, '\0');

  // Reading does not consume it.
  EXPECT_EQ(kvzch_last_error_message(nullptr, 0), full);
}

TEST(LastError, IsPerThread) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  const int64_t id = 1;
  uint8_t out[8];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &id, 1, out, 1, nullptr, nullptr),
            KVZCH_STATUS_INVALID_ARGUMENT);
  ASSERT_GT(kvzch_last_error_message(nullptr, 0), 0u);
  size_t other_thread = 1;
  std::thread([&] { other_thread = kvzch_last_error_message(nullptr, 0); }).join();
  EXPECT_EQ(other_thread, 0u);
}

}  // namespace
