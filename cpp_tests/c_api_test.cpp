// The C ABI 1.0 contract (shared/ABI.md), exercised through plain C calls.
// Built twice: against libkvzch.so and against libkvzch.a.
#include "kvzch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

void set_rows(kvzch_cache* cache, const std::vector<int64_t>& ids, uint32_t row_bytes,
              uint32_t version, uint32_t timestamp) {
  const std::vector<uint8_t> rows = rows_for(ids, row_bytes, version);
  ASSERT_EQ(kvzch_cache_batch_set(cache, ids.data(), ids.size(), rows.data(), rows.size(), timestamp),
            KVZCH_STATUS_OK)
      << last_error();
}

// ---------------------------------------------------------------- lifecycle

TEST(Lifecycle, OptionsInitSetsDefaults) {
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

TEST(Lifecycle, OutParamUntouchedOnError) {
  kvzch_options opts = options(0);
  kvzch_cache* sentinel = reinterpret_cast<kvzch_cache*>(static_cast<uintptr_t>(0x1234));
  kvzch_cache* cache = sentinel;
  EXPECT_EQ(kvzch_cache_create(&opts, &cache), KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(cache, sentinel);
}

TEST(Lifecycle, NullNameIsDefaultTable) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  std::string seen;
  auto sink = [](void* user_data, const kvzch_batch_event* event) {
    *static_cast<std::string*>(user_data) = event->table;
  };
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), sink, &seen, &id), KVZCH_STATUS_OK);
  const int64_t key = 1;
  uint8_t out[8];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_EQ(seen, "default");
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), id), KVZCH_STATUS_OK);
}

// ---------------------------------------------------------------- options

struct BadOptionCase {
  const char* what;
  void (*mutate)(kvzch_options*);
};

TEST(Options, InvalidValuesAreRejected) {
  const BadOptionCase cases[] = {
      {"row_bytes 0", [](kvzch_options* o) { o->row_bytes = 0; }},
      {"row_bytes 65537", [](kvzch_options* o) { o->row_bytes = 65537; }},
      {"miss_policy 7", [](kvzch_options* o) { o->miss_policy = 7; }},
      {"name with a space", [](kvzch_options* o) { o->name = "a b"; }},
      {"empty name", [](kvzch_options* o) { o->name = ""; }},
      {"65-byte name",
       [](kvzch_options* o) {
         o->name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
       }},
      {"num_shards 65537", [](kvzch_options* o) { o->num_shards = 65537; }},
      {"num_shards UINT32_MAX", [](kvzch_options* o) { o->num_shards = UINT32_MAX; }},
      {"struct_size 0", [](kvzch_options* o) { o->struct_size = 0; }},
      {"struct_size without name",
       [](kvzch_options* o) { o->struct_size = offsetof(kvzch_options, name); }},
  };
  for (const BadOptionCase& c : cases) {
    kvzch_options opts = options(16);
    c.mutate(&opts);
    kvzch_cache* cache = nullptr;
    EXPECT_EQ(kvzch_cache_create(&opts, &cache), KVZCH_STATUS_INVALID_ARGUMENT) << c.what;
    EXPECT_EQ(cache, nullptr) << c.what;
    EXPECT_FALSE(last_error().empty()) << c.what;
    kvzch_cache_destroy(cache);
  }
}

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
  EXPECT_EQ(rows_in(cache.get()), 2u);
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
  EXPECT_EQ(rows_in(cache.get()), 2u);
  const int64_t key = 5;
  uint8_t out[rb];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_TRUE(row_equals(out, rb, 5, 3));

  // Removing the id once must leave nothing behind (no leaked duplicate).
  uint64_t removed = 0;
  ASSERT_EQ(kvzch_cache_batch_remove(cache.get(), &key, 1, &removed), KVZCH_STATUS_OK);
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(rows_in(cache.get()), 1u);
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

  // Up to the limit, and overwriting at the limit, still work.
  set_rows(cache.get(), {3}, rb, 1, 3);
  set_rows(cache.get(), {0, 1, 2, 3}, rb, 3, 4);
  EXPECT_EQ(rows_in(cache.get()), 4u);
}

// Readers must see each row whole, old or new, while a writer republishes it.
TEST(Data, NoTornRowsUnderConcurrentWrites) {
  const uint32_t rb = 256;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  std::vector<int64_t> ids(64);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  set_rows(cache.get(), ids, rb, 0, 0);

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
  std::thread reader([&] {
    std::vector<uint8_t> out(ids.size() * rb);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
    while (std::chrono::steady_clock::now() < deadline) {
      if (kvzch_cache_batch_get(cache.get(), ids.data(), ids.size(), out.data(), out.size(),
                                nullptr, nullptr) != KVZCH_STATUS_OK) {
        failed_calls.fetch_add(1);
      }
      for (size_t i = 0; i < ids.size(); ++i) {
        // fill_row gives byte b the value id*31 + version*7 + b, so every byte
        // of a whole row agrees on (value - b).
        const uint8_t* row = out.data() + i * rb;
        for (uint32_t b = 1; b < rb; ++b) {
          if (static_cast<uint8_t>(row[b] - b) != row[0]) {
            torn.fetch_add(1);
            break;
          }
        }
      }
    }
    stop.store(true);
  });
  reader.join();
  writer.join();
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_EQ(failed_calls.load(), 0u);
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
// breaks hits == 3 * misses; one indivisible snapshot never does.
TEST(Counters, ConcurrentSnapshotsNeverSplitABatch) {
  const uint32_t rb = 8;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  std::vector<int64_t> present(300);
  for (size_t i = 0; i < present.size(); ++i) present[i] = static_cast<int64_t>(i);
  set_rows(cache.get(), present, rb, 1, 1);

  const int kWorkers = 2;
  const int kBatchesPerWorker = 20000;
  std::atomic<int> running{kWorkers};
  std::atomic<uint64_t> lookups{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(static_cast<uint32_t>(w) + 1);
      std::vector<int64_t> ids;
      std::vector<uint8_t> out;
      for (int i = 0; i < kBatchesPerWorker; ++i) {
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
  uint64_t snapshots = 0;
  uint64_t poll_failures = 0;
  uint64_t bad_window = 0;
  uint64_t bad_cumulative = 0;
  uint64_t last_cumulative = 0;
  uint64_t cumulative_went_back = 0;
  auto poll = [&] {
    kvzch_read_stats w{};
    kvzch_read_stats c{};
    if (kvzch_cache_get_read_hit_rate_stats(cache.get(), &w) != KVZCH_STATUS_OK ||
        kvzch_cache_get_cumulative_read_stats(cache.get(), &c) != KVZCH_STATUS_OK) {
      ++poll_failures;
      return;
    }
    ++snapshots;
    if (w.hits != 3 * w.misses || w.hits + w.misses != w.total) ++bad_window;
    if (c.hits != 3 * c.misses || c.hits + c.misses != c.total) ++bad_cumulative;
    if (c.total < last_cumulative) ++cumulative_went_back;
    last_cumulative = c.total;
    window_sum += w.total;
  };
  while (running.load() > 0) poll();
  for (std::thread& t : workers) t.join();
  poll();  // drain the last window

  EXPECT_EQ(poll_failures, 0u);
  EXPECT_GT(snapshots, 10u);
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

TEST(Sinks, UnknownIdIsNotFound) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), 0xDEADBEEF), KVZCH_STATUS_NOT_FOUND);
  EXPECT_EQ(kvzch_unregister_global_stat_sink(0xDEADBEEF), KVZCH_STATUS_NOT_FOUND);

  Recorded r;
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), record_event, &r, &id), KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_unregister_global_stat_sink(id), KVZCH_STATUS_NOT_FOUND)
      << "a cache sink id is not a global sink id";
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), id), KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), id), KVZCH_STATUS_NOT_FOUND);
}

TEST(Sinks, SinkIdsBelongToTheirCache) {
  CachePtr a = make_cache(8);
  CachePtr b = make_cache(8);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  Recorded r;
  uint64_t id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(a.get(), record_event, &r, &id), KVZCH_STATUS_OK);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(b.get(), id), KVZCH_STATUS_NOT_FOUND);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(a.get(), id), KVZCH_STATUS_OK);
}

TEST(Sinks, NullFnIsNullArgument) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  uint64_t id = 77;
  EXPECT_EQ(kvzch_cache_register_stat_sink(cache.get(), nullptr, nullptr, &id),
            KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_register_global_stat_sink(nullptr, nullptr, &id), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(id, 77u);
}

// ---------------------------------------------------------------- arguments

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

TEST(Arguments, NullCacheIsNullArgument) {
  const int64_t id = 1;
  uint8_t buf[8] = {0};
  kvzch_read_stats rs;
  kvzch_cache_info info{};
  info.struct_size = sizeof info;
  uint64_t sink_id = 0;
  auto sink = [](void*, const kvzch_batch_event*) {};
  EXPECT_EQ(kvzch_cache_batch_set(nullptr, &id, 1, buf, 8, 1), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_FALSE(last_error().empty());
  EXPECT_EQ(kvzch_cache_batch_get(nullptr, &id, 1, buf, 8, nullptr, nullptr),
            KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_remove(nullptr, &id, 1, nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_evict_older_than(nullptr, 1, nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_get_info(nullptr, &info), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_get_read_hit_rate_stats(nullptr, &rs), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_get_cumulative_read_stats(nullptr, &rs), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_register_stat_sink(nullptr, sink, nullptr, &sink_id),
            KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(nullptr, 1), KVZCH_STATUS_NULL_ARGUMENT);
}

TEST(Arguments, NullRequiredPointersAreNullArgument) {
  CachePtr cache = make_cache(8);
  ASSERT_NE(cache, nullptr);
  const int64_t id = 1;
  uint8_t buf[8] = {0};
  kvzch_options opts = options(8);
  kvzch_cache* out = nullptr;
  EXPECT_EQ(kvzch_cache_create(nullptr, &out), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_create(&opts, nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), nullptr, 1, buf, 8, 1), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), &id, 1, nullptr, 8, 1), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_get(cache.get(), nullptr, 1, buf, 8, nullptr, nullptr),
            KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_get(cache.get(), &id, 1, nullptr, 8, nullptr, nullptr),
            KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_remove(cache.get(), nullptr, 1, nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_get_info(cache.get(), nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_get_read_hit_rate_stats(cache.get(), nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(kvzch_cache_get_cumulative_read_stats(cache.get(), nullptr), KVZCH_STATUS_NULL_ARGUMENT);
  EXPECT_EQ(rows_in(cache.get()), 0u);
  EXPECT_EQ(cumulative(cache.get()).total, 0u);
}

TEST(Arguments, ShortOutBufferIsRejectedAndNamed) {
  const uint32_t rb = 16;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1, 2}, rb, 1, 1);
  Recorded r;
  uint64_t sink_id = 0;
  ASSERT_EQ(kvzch_cache_register_stat_sink(cache.get(), record_event, &r, &sink_id),
            KVZCH_STATUS_OK);

  const int64_t ids[] = {1, 2};
  std::vector<uint8_t> out(2 * rb, 0x5A);
  uint8_t mask[2] = {7, 7};
  kvzch_batch_stats stats;
  std::memset(&stats, 0xEE, sizeof stats);
  const kvzch_batch_stats before = stats;
  EXPECT_EQ(kvzch_cache_batch_get(cache.get(), ids, 2, out.data(), 2 * rb - 1, mask, &stats),
            KVZCH_STATUS_INVALID_ARGUMENT);
  const std::string message = last_error();
  EXPECT_NE(message.find("out_len"), std::string::npos) << message;
  for (uint8_t byte : out) EXPECT_EQ(byte, 0x5A);
  EXPECT_EQ(mask[0], 7);
  EXPECT_EQ(std::memcmp(&stats, &before, sizeof stats), 0) << "stats written on error";
  EXPECT_EQ(cumulative(cache.get()).total, 0u) << "a rejected batch was counted";
  EXPECT_TRUE(r.tables.empty()) << "a rejected batch reached a sink";
  EXPECT_EQ(kvzch_cache_unregister_stat_sink(cache.get(), sink_id), KVZCH_STATUS_OK);
}

TEST(Arguments, ShortRowsBufferIsRejectedAndCacheUnchanged) {
  const uint32_t rb = 16;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  set_rows(cache.get(), {1}, rb, 1, 1);
  const std::vector<int64_t> ids = {1, 2, 3};
  const std::vector<uint8_t> rows = rows_for(ids, rb, 2);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), ids.data(), ids.size(), rows.data(),
                                  rows.size() - 1, 2),
            KVZCH_STATUS_INVALID_ARGUMENT);
  const std::string message = last_error();
  EXPECT_NE(message.find("rows_len"), std::string::npos) << message;
  EXPECT_EQ(rows_in(cache.get()), 1u);
  const int64_t key = 1;
  uint8_t out[rb];
  ASSERT_EQ(kvzch_cache_batch_get(cache.get(), &key, 1, out, sizeof out, nullptr, nullptr),
            KVZCH_STATUS_OK);
  EXPECT_TRUE(row_equals(out, rb, 1, 1)) << "the rejected batch overwrote a row";
}

// n * row_bytes wraps around size_t, which a naive check would accept.
TEST(Arguments, RowBufferSizeOverflowIsInvalid) {
  const uint32_t rb = 4096;
  CachePtr cache = make_cache(rb);
  ASSERT_NE(cache, nullptr);
  const size_t n = SIZE_MAX / rb + 2;
  const int64_t ids[4] = {1, 2, 3, 4};
  uint8_t buf[rb];
  // n * rb mod 2^64 is small enough to fit in a "real" buffer length.
  const size_t wrapped = n * rb;
  ASSERT_LT(wrapped, sizeof buf + 1);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), ids, n, buf, sizeof buf, 1),
            KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_get(cache.get(), ids, n, buf, sizeof buf, nullptr, nullptr),
            KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(kvzch_cache_batch_set(cache.get(), ids, n, buf, SIZE_MAX, 1),
            KVZCH_STATUS_INVALID_ARGUMENT);
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
                           "global_stat_sink", "evict_older_than", "batch_remove", "plugin_api_v1"}) {
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
