// The C++ layer (kvzch.hpp): ownership, errors, sink registrations, adapter.
// Built against the .so and the .a, and once more as C++20 for std::span.
#include "kvzch.hpp"

#if defined(KVZCH_TEST_REQUIRE_SPAN) && !defined(KVZCH_HPP_HAS_SPAN)
#error "built as C++20 with <span>, yet kvzch.hpp left out its std::span overloads"
#endif

#include <gtest/gtest.h>

#include "intended_leak.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

static_assert(!std::is_copy_constructible_v<kvzch::Cache>);
static_assert(!std::is_copy_assignable_v<kvzch::Cache>);
static_assert(std::is_nothrow_move_constructible_v<kvzch::Cache>);
static_assert(std::is_nothrow_move_assignable_v<kvzch::Cache>);
static_assert(!std::is_copy_constructible_v<kvzch::SinkRegistration>);
static_assert(std::is_nothrow_move_constructible_v<kvzch::SinkRegistration>);
static_assert(std::is_base_of_v<std::runtime_error, kvzch::Error>);

std::vector<std::uint8_t> row_of(std::uint8_t value, std::size_t row_bytes) {
  return std::vector<std::uint8_t>(row_bytes, value);
}

void put(kvzch::Cache& cache, std::int64_t id, std::uint8_t value, std::uint32_t ts = 1) {
  const std::vector<std::uint8_t> row = row_of(value, cache.row_bytes());
  cache.batch_set(&id, 1, row.data(), row.size(), ts);
}

kvzch_batch_stats lookup(kvzch::Cache& cache, const std::vector<std::int64_t>& ids) {
  std::vector<std::uint8_t> out(ids.size() * cache.row_bytes());
  return cache.batch_get(ids.data(), ids.size(), out.data(), out.size());
}

TEST(Cache, OptionsBuilderReachesTheLibrary) {
  kvzch::Cache cache(kvzch::Options()
                         .row_bytes(48)
                         .num_shards(3)
                         .miss_policy(kvzch::MissPolicy::LeaveUntouched)
                         .max_rows(1000)
                         .max_memory_bytes(std::uint64_t{1} << 30)
                         .name("hpp.table-1"));
  EXPECT_EQ(cache.row_bytes(), 48u);
  const kvzch_cache_info info = cache.info();
  EXPECT_EQ(info.row_bytes, 48u);
  EXPECT_EQ(info.num_shards, 4u);
  EXPECT_EQ(info.rows, 0u);

  // LeaveUntouched really was passed through.
  const std::int64_t id = 5;
  std::vector<std::uint8_t> out(48, 0xAB);
  const kvzch_batch_stats s = cache.batch_get(&id, 1, out.data(), out.size());
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(out[0], 0xAB);
}

// Each bound reaches the library as itself: one too small to hold an empty
// cache is refused, and named, at creation.
TEST(Cache, OptionsBoundsReachTheLibrary) {
  try {
    kvzch::Cache cache(kvzch::Options().row_bytes(8).max_memory_bytes(1));
    FAIL() << "a 1-byte memory bound was accepted";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("max_memory_bytes 1"), std::string::npos) << e.what();
  }
  kvzch::Cache capped(kvzch::Options().row_bytes(8).max_rows(2));
  const std::vector<std::int64_t> ids = {1, 2, 3};
  const std::vector<std::uint8_t> rows(ids.size() * 8, 1);
  try {
    capped.batch_set(ids.data(), ids.size(), rows.data(), rows.size(), 1);
    FAIL() << "3 rows went into max_rows 2";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_CAPACITY_EXCEEDED);
  }
}

TEST(Cache, OptionsCopyKeepsItsOwnName) {
  kvzch::Options original = kvzch::Options().row_bytes(8).name("first");
  const kvzch::Options copy = original;
  original.name("second");
  std::string seen;
  kvzch::Cache cache(copy);
  kvzch::SinkRegistration reg =
      cache.on_batch([&](const kvzch_batch_event& e) { seen = e.table; });
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(seen, "first");
}

TEST(Cache, RoundTripHitMaskStats) {
  kvzch::Cache cache(kvzch::Options().row_bytes(4));
  const std::int64_t ids[] = {1, 2, 3};
  const std::uint8_t rows[] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
  cache.batch_set(ids, 3, rows, sizeof rows, 10);

  const std::int64_t query[] = {3, 4, 1};
  std::uint8_t out[12];
  std::uint8_t mask[3];
  const kvzch_batch_stats s = cache.batch_get(query, 3, out, sizeof out, mask);
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.total, 3u);
  EXPECT_EQ(mask[0], 1);
  EXPECT_EQ(mask[1], 0);
  EXPECT_EQ(mask[2], 1);
  EXPECT_EQ(out[0], 3);
  EXPECT_EQ(out[4], 0) << "zero-fill is the default miss policy";
  EXPECT_EQ(out[8], 1);
  EXPECT_EQ(cache.info().rows, 3u);

  const std::int64_t gone[] = {1, 99};
  EXPECT_EQ(cache.batch_remove(gone, 2), 1u);
  put(cache, 7, 7, 20);
  EXPECT_EQ(cache.evict_older_than(20), 2u);
  EXPECT_EQ(cache.info().rows, 1u);
}

TEST(Cache, ReadHitRateResetsCumulativeDoesNot) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  put(cache, 1, 1);
  static_cast<void>(lookup(cache, {1, 1, 2}));
  const kvzch_read_stats window = cache.read_hit_rate_stats();
  EXPECT_EQ(window.hits, 2u);
  EXPECT_EQ(window.misses, 1u);
  EXPECT_EQ(window.total, 3u);
  EXPECT_EQ(cache.read_hit_rate_stats().total, 0u);
  EXPECT_EQ(cache.cumulative_read_stats().total, 3u);
  EXPECT_EQ(cache.cumulative_read_stats().total, 3u);
}

TEST(Cache, MoveTransfersOwnership) {
  kvzch::Cache a(kvzch::Options().row_bytes(8));
  put(a, 1, 9);
  kvzch_cache* handle = a.handle();
  ASSERT_NE(handle, nullptr);

  kvzch::Cache b(std::move(a));
  EXPECT_EQ(b.handle(), handle);
  EXPECT_EQ(a.handle(), nullptr);  // the moved-from state is specified: no handle
  EXPECT_EQ(b.info().rows, 1u);

  kvzch::Cache c(kvzch::Options().row_bytes(16));
  c = std::move(b);
  EXPECT_EQ(c.handle(), handle);
  EXPECT_EQ(b.handle(), nullptr);  // NOLINT(bugprone-use-after-move): specified
  EXPECT_EQ(c.row_bytes(), 8u);
  EXPECT_EQ(c.info().rows, 1u);
}

TEST(Cache, MovedFromCacheThrowsNullArgument) {
  kvzch::Cache a(kvzch::Options().row_bytes(8));
  kvzch::Cache b(std::move(a));
  try {
    static_cast<void>(a.info());
    FAIL() << "no exception";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_NULL_ARGUMENT);
  }
}

TEST(Cache, MovedFromCacheRegistersNoSink) {
  kvzch::Cache a(kvzch::Options().row_bytes(8));
  kvzch::Cache b(std::move(a));
  std::atomic<int> batches_seen{0};
  try {
    kvzch::SinkRegistration registration =
        a.on_batch([&](const kvzch_batch_event&) { batches_seen.fetch_add(1); });
    ADD_FAILURE() << "no exception; registration active: " << registration.active();
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_NULL_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("moved from"), std::string::npos) << e.what();
  }
  // A NULL handle names every cache to register_sink: no sink may see b's batch.
  put(b, 1, 9);
  EXPECT_EQ(lookup(b, {1}).hits, 1u);
  EXPECT_EQ(batches_seen.load(), 0);
}

TEST(Errors, BadOptionsThrowWithStatusAndMessage) {
  try {
    kvzch::Cache cache(kvzch::Options().row_bytes(0));
    FAIL() << "no exception";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_INVALID_ARGUMENT);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("INVALID_ARGUMENT: kvzch_cache_create: ", 0), 0u) << what;
    EXPECT_NE(what.find("row_bytes"), std::string::npos) << what;
    EXPECT_FALSE(e.library_message().empty());
    EXPECT_NE(what.find(e.library_message()), std::string::npos);
  }
  EXPECT_THROW(kvzch::Cache(kvzch::Options().row_bytes(8).name("a b")), kvzch::Error);
}

TEST(Errors, ShortBufferThrowsAndNamesTheArgument) {
  kvzch::Cache cache(kvzch::Options().row_bytes(16));
  const std::int64_t ids[] = {1, 2};
  std::uint8_t out[31];
  try {
    static_cast<void>(cache.batch_get(ids, 2, out, sizeof out));
    FAIL() << "no exception";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_INVALID_ARGUMENT);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("INVALID_ARGUMENT: kvzch_cache_batch_get: ", 0), 0u) << what;
    EXPECT_NE(what.find("out_len"), std::string::npos) << what;
  }
  EXPECT_EQ(cache.cumulative_read_stats().total, 0u);
}

TEST(Sinks, RegistrationSeesBatchesUntilDestroyed) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8).name("events"));
  put(cache, 1, 1);
  std::vector<kvzch_batch_stats> seen;
  std::string table;
  {
    kvzch::SinkRegistration reg = cache.on_batch([&](const kvzch_batch_event& e) {
      seen.push_back(e.stats);
      table = e.table;
    });
    EXPECT_TRUE(reg.active());
    static_cast<void>(lookup(cache, {1, 2}));
    static_cast<void>(lookup(cache, {}));  // n == 0: no event
  }
  static_cast<void>(lookup(cache, {1}));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].hits, 1u);
  EXPECT_EQ(seen[0].misses, 1u);
  EXPECT_EQ(table, "events");
}

// register_sink on a raw handle (a cache the host owns through the C API):
// the sink sees that cache's batches only, until its registration ends.
TEST(Sinks, RegisterSinkOnARawHandleSeesOnlyThatCache) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8).name("raw"));
  kvzch::Cache other(kvzch::Options().row_bytes(8).name("other"));
  std::vector<std::string> tables;
  kvzch::SinkRegistration reg = kvzch::register_sink(
      cache.handle(), [&](const kvzch_batch_event& e) { tables.emplace_back(e.table); });
  EXPECT_TRUE(reg.active());
  static_cast<void>(lookup(cache, {1}));
  static_cast<void>(lookup(other, {1}));
  reg.reset();
  EXPECT_FALSE(reg.active());
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(tables, std::vector<std::string>{"raw"});
}

TEST(Sinks, ResetAndMove) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  int calls = 0;
  kvzch::SinkRegistration outer;
  EXPECT_FALSE(outer);
  {
    kvzch::SinkRegistration reg = cache.on_batch([&](const kvzch_batch_event&) { ++calls; });
    outer = std::move(reg);
    EXPECT_FALSE(reg);
  }
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(calls, 1) << "moving the registration must not unregister it";
  outer.reset();
  EXPECT_FALSE(outer);
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(calls, 1);
  outer.reset();  // idempotent
}

// Unregistered by its id from elsewhere, a registration learns so from its
// own unregister (NOT_FOUND), and ends: inactive, its callable freed.
TEST(Sinks, UnregisterAfterItsIdWasUnregisteredElsewhereAnswersNotFoundAndEnds) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  auto held = std::make_shared<int>(0);
  const std::weak_ptr<int> callable_state = held;
  kvzch::SinkRegistration reg =
      cache.on_batch([held = std::move(held)](const kvzch_batch_event&) { ++*held; });
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(*callable_state.lock(), 1);
  ASSERT_EQ(kvzch_cache_unregister_stat_sink(cache.handle(), reg.id()), KVZCH_STATUS_OK);
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(*callable_state.lock(), 1) << "the id was the registration's sink";
  EXPECT_TRUE(reg.active());
  EXPECT_EQ(reg.unregister(), KVZCH_STATUS_NOT_FOUND);
  EXPECT_FALSE(reg.active());
  EXPECT_TRUE(callable_state.expired()) << "the callable was freed";
  EXPECT_EQ(reg.unregister(), KVZCH_STATUS_OK) << "inactive already";
}

// With a library that releases sinks itself (1.3), a registration may end
// from inside its own callable: the callable and its captures live on until
// that call returns, and are freed as it does.
TEST(Sinks, EndedFromInsideItsCallableTheCallableIsFreedAsTheCallReturns) {
  ASSERT_TRUE(kvzch::Library::linked().has("stat_sink_release"));
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  auto held = std::make_shared<int>(0);
  const std::weak_ptr<int> callable_state = held;
  int calls = 0;
  kvzch_status status = KVZCH_STATUS_INTERNAL;
  bool alive_after_unregister = false;
  kvzch::SinkRegistration reg;
  reg = cache.on_batch([&, held = std::move(held)](const kvzch_batch_event&) {
    ++calls;
    status = reg.unregister();
    alive_after_unregister = !callable_state.expired();
  });
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(status, KVZCH_STATUS_OK);
  EXPECT_TRUE(alive_after_unregister) << "freed while its call ran";
  EXPECT_FALSE(reg.active());
  EXPECT_TRUE(callable_state.expired()) << "freed as its call returned";
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(calls, 1);
}

// The same while another thread is inside the callable: the callable is
// freed only once that call has returned too.
TEST(Sinks, EndedFromInsideItsCallableTheCallableOutlivesItsOtherCalls) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  auto held = std::make_shared<int>(0);
  const std::weak_ptr<int> callable_state = held;
  std::atomic<int> calls{0};
  std::atomic<bool> first_call_inside{false};
  std::atomic<bool> end_first_call{false};
  std::atomic<int> status{KVZCH_STATUS_INTERNAL};
  kvzch::SinkRegistration reg;
  reg = cache.on_batch([&, held = std::move(held)](const kvzch_batch_event&) {
    if (calls.fetch_add(1) == 0) {
      first_call_inside.store(true);
      while (!end_first_call.load()) std::this_thread::yield();
      return;
    }
    status.store(reg.unregister());
  });
  std::thread first([&] { static_cast<void>(lookup(cache, {1})); });
  while (!first_call_inside.load()) std::this_thread::yield();
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(status.load(), KVZCH_STATUS_OK);
  EXPECT_FALSE(reg.active());
  EXPECT_FALSE(callable_state.expired()) << "freed while another thread's call ran";
  end_first_call.store(true);
  first.join();
  EXPECT_TRUE(callable_state.expired()) << "freed as the last call returned";
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(calls.load(), 2);
}

TEST(Sinks, ReassigningUnregistersThePrevious) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  int first = 0;
  int second = 0;
  kvzch::SinkRegistration reg = cache.on_batch([&](const kvzch_batch_event&) { ++first; });
  reg = cache.on_batch([&](const kvzch_batch_event&) { ++second; });
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 1);
}

// A registration from on_batch keeps its cache alive, so the Cache may go
// first: the cache still serves and calls the sink, and unregistering ends it.
TEST(Sinks, RegistrationOutlivingItsCacheKeepsTheCacheAlive) {
  kvzch::SinkRegistration reg;
  kvzch_cache* handle = nullptr;
  int calls = 0;
  const std::int64_t id = 7;
  {
    kvzch::Cache cache(kvzch::Options().row_bytes(8));
    const std::uint64_t row = 77;
    cache.batch_set(&id, 1, &row, sizeof row, 1);
    reg = cache.on_batch([&](const kvzch_batch_event&) { ++calls; });
    handle = cache.handle();
  }
  std::uint64_t out = 0;
  kvzch_batch_stats stats{};
  ASSERT_EQ(kvzch_cache_batch_get(handle, &id, 1, &out, sizeof out, nullptr, &stats),
            KVZCH_STATUS_OK);
  EXPECT_EQ(out, 77u);
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(reg.unregister(), KVZCH_STATUS_OK);
  EXPECT_FALSE(reg);
}

// The callable is held by the registration: with no lookup running beside it,
// destroyed when the registration ends.
TEST(Sinks, CallableLifetimeIsTheRegistrations) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  auto alive = std::make_shared<int>(0);
  std::weak_ptr<int> watch = alive;
  {
    kvzch::SinkRegistration reg =
        cache.on_batch([owned = std::move(alive)](const kvzch_batch_event&) { ++*owned; });
    static_cast<void>(lookup(cache, {1}));
    ASSERT_FALSE(watch.expired());
    EXPECT_EQ(*watch.lock(), 1);
  }
  EXPECT_TRUE(watch.expired());
}

TEST(Sinks, MoveOnlyCallablesAreAccepted) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  auto counter = std::make_unique<int>(0);
  int* raw = counter.get();
  kvzch::SinkRegistration reg =
      cache.on_batch([c = std::move(counter)](const kvzch_batch_event&) { ++*c; });
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(*raw, 1);
}

TEST(Sinks, ThrowingSinkIsSwallowedAndCounted) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  put(cache, 1, 1);
  int after = 0;
  const std::uint64_t before = kvzch::swallowed_sink_exceptions();
  kvzch::SinkRegistration thrower =
      cache.on_batch([](const kvzch_batch_event&) { throw std::runtime_error("sink failed"); });
  kvzch::SinkRegistration odd_thrower = cache.on_batch([](const kvzch_batch_event&) { throw 42; });
  kvzch::SinkRegistration counter = cache.on_batch([&](const kvzch_batch_event&) { ++after; });

  kvzch_batch_stats s{};
  EXPECT_NO_THROW(s = lookup(cache, {1, 2}));
  EXPECT_EQ(s.hits, 1u);
  EXPECT_NO_THROW(s = lookup(cache, {1}));
  EXPECT_EQ(kvzch::swallowed_sink_exceptions() - before, 4u);
  EXPECT_EQ(after, 2) << "a throwing sink stopped the others";
  EXPECT_EQ(cache.cumulative_read_stats().total, 3u);
}

TEST(Sinks, GlobalRegistrationSeesEveryCache) {
  kvzch::Cache a(kvzch::Options().row_bytes(8).name("a"));
  kvzch::Cache b(kvzch::Options().row_bytes(8).name("b"));
  std::vector<std::string> tables;
  {
    kvzch::SinkRegistration reg =
        kvzch::on_any_batch([&](const kvzch_batch_event& e) { tables.emplace_back(e.table); });
    static_cast<void>(lookup(a, {1}));
    static_cast<void>(lookup(b, {1}));
  }
  static_cast<void>(lookup(a, {1}));
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(tables[0], "a");
  EXPECT_EQ(tables[1], "b");
}

// The library promises that a sink's registration happens before its calls,
// and every call before its unregistration returns (and so before the
// registration frees the callable), but it keeps those promises with its own
// atomics, which ThreadSanitizer cannot see (libkvzch is not instrumented).
// kvzch.hpp restates both edges where TSan sees them. In the TSan build the
// next test checks the second (without it, TSan reports the callable's free
// as racing with the last call's reads of its captures), and
// RegisteredWhileBatchesRunOnAnotherThread the first.

// Destruction from another thread while batches run: when the destructor
// returns, the callable is gone and no call may still be in flight.
TEST(Sinks, DestroyWhileBatchesRunFromOtherThreads) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  std::atomic<bool> ended{false};
  std::atomic<std::uint64_t> late_calls{0};
  std::atomic<std::uint64_t> calls{0};
  auto reg = std::make_unique<kvzch::SinkRegistration>(
      cache.on_batch([&](const kvzch_batch_event&) {
        if (ended.load()) late_calls.fetch_add(1);
        calls.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        if (ended.load()) late_calls.fetch_add(1);
      }));
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    while (!stop.load()) static_cast<void>(lookup(cache, {1}));
  });
  while (calls.load() < 20) std::this_thread::yield();
  reg.reset();
  ended.store(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop.store(true);
  worker.join();
  EXPECT_EQ(late_calls.load(), 0u);
}

// The callable and what it captures are built on this thread while another
// thread's batches already run, and that thread reads them in its calls:
// only the registration orders the construction before the reads. Without
// kvzch.hpp's edge there, TSan reports them as racing. This test has teeth
// only in the TSan build (ctest -L sanitize); elsewhere it checks no more
// than that the sink is called with what it captured.
TEST(Sinks, RegisteredWhileBatchesRunOnAnotherThread) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    while (!stop.load()) static_cast<void>(lookup(cache, {1}));
  });
  std::atomic<std::uint64_t> seen{0};
  {
    auto payload = std::make_shared<std::vector<std::uint64_t>>(64, 7);
    kvzch::SinkRegistration reg =
        cache.on_batch([payload, &seen](const kvzch_batch_event&) { seen.fetch_add((*payload)[63]); });
    while (seen.load() < 70) std::this_thread::yield();
  }
  stop.store(true);
  worker.join();
  EXPECT_EQ(seen.load() % 7, 0u);
}

// Two sinks unregistering each other from inside themselves, on two threads:
// the library refuses one of the two (WOULD_DEADLOCK). unregister() reports
// it and keeps that registration active; it can then be ended from outside.
TEST(Sinks, UnregisterReportsARefusalAndStaysActive) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  kvzch::SinkRegistration reg_a;
  kvzch::SinkRegistration reg_b;
  // The first thread into a sink takes it on; the other thread passes it.
  std::atomic<bool> a_taken{false};
  std::atomic<bool> b_taken{false};
  std::atomic<int> status_a{-1};
  std::atomic<int> status_b{-1};
  std::atomic<std::uint64_t> late_calls{0};
  std::atomic<bool> ended{false};
  const auto wait_for = [](const std::atomic<bool>& flag) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!flag.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    return flag.load();
  };
  // Each sink, taken on, waits until the other one runs too, then
  // unregisters the other's registration.
  const auto sink = [&](std::atomic<bool>& mine, const std::atomic<bool>& other,
                        kvzch::SinkRegistration& target, std::atomic<int>& status) {
    if (ended.load()) late_calls.fetch_add(1);
    if (!mine.exchange(true) && wait_for(other)) status.store(target.unregister());
  };
  reg_a = cache.on_batch([&](const kvzch_batch_event&) {
    sink(a_taken, b_taken, reg_b, status_a);
  });
  reg_b = cache.on_batch([&](const kvzch_batch_event&) {
    sink(b_taken, a_taken, reg_a, status_b);
  });
  std::thread first([&] { static_cast<void>(lookup(cache, {1})); });
  std::thread second([&] { static_cast<void>(lookup(cache, {2})); });
  first.join();
  second.join();

  const bool a_refused = status_a.load() == KVZCH_STATUS_WOULD_DEADLOCK;
  const bool b_refused = status_b.load() == KVZCH_STATUS_WOULD_DEADLOCK;
  ASSERT_NE(a_refused, b_refused) << "statuses " << status_a.load() << " and " << status_b.load();
  EXPECT_EQ(a_refused ? status_b.load() : status_a.load(), KVZCH_STATUS_OK);
  // A refused unregister of B leaves B's registration active; the other ended A's.
  kvzch::SinkRegistration& kept = a_refused ? reg_b : reg_a;
  kvzch::SinkRegistration& ended_one = a_refused ? reg_a : reg_b;
  EXPECT_TRUE(kept.active());
  EXPECT_FALSE(ended_one.active());
  EXPECT_EQ(kept.unregister(), KVZCH_STATUS_OK);
  EXPECT_FALSE(kept.active());
  EXPECT_EQ(kept.unregister(), KVZCH_STATUS_OK) << "an inactive registration answers OK";
  ended.store(true);
  static_cast<void>(lookup(cache, {1}));
  EXPECT_EQ(late_calls.load(), 0u);
}

// A sink resets the registration of a sink it runs under on its thread: the
// library refuses that unregister (WOULD_DEADLOCK), so reset() leaves the
// registration inactive and leaks the callable, which stays registered and
// runs for the cache's later batches, and its hold on the cache (allocated by
// on_batch with the callable, inside the IntendedLeak scope).
TEST(Sinks, ResetAfterARefusalLeavesTheRegistrationInactiveAndTheSinkRunning) {
  kvzch::Cache outer(kvzch::Options().row_bytes(8));
  kvzch::Cache inner(kvzch::Options().row_bytes(8));
  std::atomic<std::uint64_t> outer_calls{0};
  std::atomic<bool> nest{true};
  kvzch::SinkRegistration reg_outer;
  {
    const IntendedLeak leak;  // the callable reset() leaks below
    reg_outer = outer.on_batch([&](const kvzch_batch_event&) {
      outer_calls.fetch_add(1);
      if (nest.exchange(false)) static_cast<void>(lookup(inner, {1}));
    });
  }
  int refused = -1;
  bool active_after_reset = true;
  kvzch::SinkRegistration reg_inner = inner.on_batch([&](const kvzch_batch_event&) {
    refused = reg_outer.unregister();
    reg_outer.reset();
    active_after_reset = reg_outer.active();
  });
  static_cast<void>(lookup(outer, {1}));
  EXPECT_EQ(refused, KVZCH_STATUS_WOULD_DEADLOCK);
  EXPECT_FALSE(active_after_reset);
  EXPECT_EQ(reg_outer.id(), 0u);
  EXPECT_EQ(reg_outer.unregister(), KVZCH_STATUS_OK) << "an inactive registration answers OK";
  static_cast<void>(lookup(outer, {2}));
  EXPECT_EQ(outer_calls.load(), 2u) << "the leaked sink still runs";
}

TEST(StatAdapter, Fb303StyleGetsCanonicalNamesAndValues) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  for (std::int64_t id : {1, 2, 3}) put(cache, id, 1);
  std::vector<std::pair<std::string, std::int64_t>> calls;
  kvzch::SinkRegistration reg =
      cache.on_batch(kvzch::fb303_style([&](std::string_view name, std::int64_t value) {
        calls.emplace_back(std::string(name), value);
      }));
  static_cast<void>(lookup(cache, {1, 2, 3, 4}));

  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].first, "kvzch.inference.read_hit_count");
  EXPECT_EQ(calls[0].second, 3);
  EXPECT_EQ(calls[1].first, "kvzch.inference.read_miss_count");
  EXPECT_EQ(calls[1].second, 1);
  EXPECT_EQ(calls[2].first, "kvzch.inference.read_total_count");
  EXPECT_EQ(calls[2].second, 4);
  EXPECT_EQ(calls[0].first, kvzch_stat_name(KVZCH_STAT_READ_HIT_COUNT));
  EXPECT_EQ(calls[1].first, kvzch_stat_name(KVZCH_STAT_READ_MISS_COUNT));
  EXPECT_EQ(calls[2].first, kvzch_stat_name(KVZCH_STAT_READ_TOTAL_COUNT));
}

// The shape a predictor has: an object with add_stat_value(name, value).
struct ServiceData {
  std::vector<std::pair<std::string, std::int64_t>> values;
  void add_stat_value(std::string_view name, std::int64_t value) {
    values.emplace_back(std::string(name), value);
  }
};

TEST(StatAdapter, RoutesEveryCacheThroughAGlobalSink) {
  kvzch::Cache a(kvzch::Options().row_bytes(8));
  kvzch::Cache b(kvzch::Options().row_bytes(8));
  put(a, 1, 1);
  ServiceData service;
  kvzch::SinkRegistration reg = kvzch::on_any_batch(kvzch::fb303_style(
      [&](std::string_view name, std::int64_t v) { service.add_stat_value(name, v); }));
  static_cast<void>(lookup(a, {1, 1}));
  static_cast<void>(lookup(b, {1}));
  ASSERT_EQ(service.values.size(), 6u);
  EXPECT_EQ(service.values[0].second, 2);  // a: hits
  EXPECT_EQ(service.values[4].second, 1);  // b: misses
}

#ifdef KVZCH_HPP_HAS_SPAN
TEST(Span, OverloadsRoundTrip) {
  kvzch::Cache cache(kvzch::Options().row_bytes(2));
  const std::vector<std::int64_t> ids = {10, 20};
  const std::vector<std::byte> rows = {std::byte{1}, std::byte{1}, std::byte{2}, std::byte{2}};
  cache.batch_set(ids, rows, 1);

  const std::vector<std::int64_t> query = {20, 30};
  std::vector<std::byte> out(4, std::byte{9});
  std::vector<std::uint8_t> mask(2);
  const kvzch_batch_stats s = cache.batch_get(query, out, mask);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(out[0], std::byte{2});
  EXPECT_EQ(out[2], std::byte{0});
  EXPECT_EQ(mask[0], 1);
  EXPECT_EQ(mask[1], 0);
  EXPECT_EQ(cache.batch_remove(std::span<const std::int64_t>(ids)), 2u);
}

TEST(Span, ShortHitMaskIsRejectedBeforeTheCall) {
  kvzch::Cache cache(kvzch::Options().row_bytes(2));
  const std::vector<std::int64_t> query = {1, 2, 3};
  std::vector<std::byte> out(6);
  std::vector<std::uint8_t> mask(2);
  try {
    static_cast<void>(cache.batch_get(query, out, mask));
    FAIL() << "no exception";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_INVALID_ARGUMENT);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("INVALID_ARGUMENT: kvzch::Cache::batch_get: hit_mask.size() 2", 0), 0u)
        << what;
  }
  EXPECT_EQ(cache.cumulative_read_stats().total, 0u);
}
#endif

}  // namespace

TEST(Capacity, EvictionPolicyKeepsTheCacheWithinMaxRowsAndCountsIt) {
  kvzch::Cache cache(kvzch::Options()
                         .row_bytes(8)
                         .num_shards(2)
                         .max_rows(10)
                         .eviction_policy(kvzch::EvictionPolicy::OldestTimestamp));
  for (std::int64_t id = 0; id < 50; ++id) {
    put(cache, id, static_cast<std::uint8_t>(id), static_cast<std::uint32_t>(id));
  }
  // Each shard of 5 rows is full once it has seen 5 of the ~25 ids it gets.
  const kvzch_cache_info info = cache.info();
  EXPECT_EQ(info.rows, 10u);
  EXPECT_EQ(info.inserts, 50u);
  EXPECT_EQ(info.capacity_evictions, 40u);
  EXPECT_EQ(info.struct_size, sizeof(kvzch_cache_info));
  cache.compact();
  EXPECT_EQ(cache.info().rows, info.rows);
}

// Each policy reaches the library as itself: after ids 0-4 are read, five
// publishes of a new id into a full cache evict the oldest rows under
// OldestTimestamp (0-4) and keep the rows read under LruApprox, whose clock
// takes unread rows, old or just published, in its hand's order.
TEST(Capacity, EachEvictionPolicyEvictsItsOwnRows) {
  for (const auto policy :
       {kvzch::EvictionPolicy::OldestTimestamp, kvzch::EvictionPolicy::LruApprox}) {
    kvzch::Cache cache(
        kvzch::Options().row_bytes(8).num_shards(1).max_rows(10).eviction_policy(policy));
    for (std::int64_t id = 0; id < 10; ++id) {
      put(cache, id, static_cast<std::uint8_t>(id), static_cast<std::uint32_t>(id + 1));
    }
    EXPECT_EQ(lookup(cache, {0, 1, 2, 3, 4}).hits, 5u);
    for (std::int64_t id = 10; id < 15; ++id) {
      put(cache, id, static_cast<std::uint8_t>(id), 20);
    }
    EXPECT_EQ(cache.info().rows, 10u);
    if (policy == kvzch::EvictionPolicy::OldestTimestamp) {
      EXPECT_EQ(lookup(cache, {0, 1, 2, 3, 4}).hits, 0u);
      EXPECT_EQ(lookup(cache, {5, 6, 7, 8, 9, 10, 11, 12, 13, 14}).hits, 10u);
    } else {
      EXPECT_EQ(lookup(cache, {0, 1, 2, 3, 4}).hits, 5u);
    }
  }
}

TEST(Capacity, ReserveGrowsTheIndexAndThrowsPastMaxRows) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8).max_rows(1000));
  const std::uint64_t empty = cache.info().memory_bytes;
  cache.reserve(1000);
  const kvzch_cache_info reserved = cache.info();
  EXPECT_GT(reserved.memory_bytes, empty);
  EXPECT_EQ(reserved.rows, 0u);
  try {
    cache.reserve(1001);
    FAIL() << "no exception";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_CAPACITY_EXCEEDED);
  }
  EXPECT_EQ(cache.info().memory_bytes, reserved.memory_bytes);
}

TEST(Capacity, WithoutAPolicyAFullCacheThrowsCapacityExceeded) {
  kvzch::Cache cache(kvzch::Options().row_bytes(8).max_rows(1));
  put(cache, 1, 1);
  try {
    put(cache, 2, 2);
    FAIL() << "no exception";
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_CAPACITY_EXCEEDED);
  }
  EXPECT_EQ(cache.info().rows, 1u);
}
