// kvzch::Library: the same host code on the linked library and on one loaded
// at run time, and Unsupported, not a crash, when the loaded library lacks a
// function. Built twice: linked to libkvzch.so (KVZCH_TEST_LINKED), and not
// linked at all, loading libkvzch.so and the older-library shim by path.
#include "kvzch.hpp"

#include <gtest/gtest.h>

#include "intended_leak.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef KVZCH_TEST_LINKED
#include <dlfcn.h>
#endif

namespace {

static_assert(std::is_base_of_v<kvzch::Error, kvzch::Unsupported>);
static_assert(std::is_nothrow_copy_constructible_v<kvzch::Library>);
static_assert(std::is_nothrow_move_constructible_v<kvzch::Library>);
static_assert(!std::is_default_constructible_v<kvzch::Library>);

kvzch::Library the_library() {
#ifdef KVZCH_TEST_LINKED
  return kvzch::Library::linked();
#else
  return kvzch::Library::open(KVZCH_LIBRARY_PATH);
#endif
}

// What a lookup of two rows into a 31-byte buffer throws (the cache's rows are
// 16 bytes); a lookup that throws nothing is a test failure.
kvzch::Error short_buffer_error(kvzch::Cache& cache) {
  const std::int64_t ids[] = {1, 2};
  std::uint8_t out[31];
  try {
    static_cast<void>(cache.batch_get(ids, 2, out, sizeof out));
  } catch (const kvzch::Error& e) {
    return e;
  }
  ADD_FAILURE() << "no exception";
  return kvzch::Error(KVZCH_STATUS_OK, "no exception", "");
}

// What a predictor writes once: publish, retire one id, serve a lookup with
// its counts routed to a sink, poll the window, and compact. It takes the
// batch_remove path when the library has it and the republish-and-evict path
// otherwise, and skips compacting on a library without it.
struct Served {
  kvzch_batch_stats batch{};
  kvzch_read_stats window{};
  std::vector<std::pair<std::string, std::int64_t>> exported;
  std::uint64_t rows = 0;
  bool used_batch_remove = false;
  bool compacted = false;
};

Served serve(const kvzch::Library& library) {
  Served served;
  kvzch::Cache cache(library, kvzch::Options().row_bytes(4).name("served"));
  kvzch::SinkRegistration registration =
      cache.on_batch(kvzch::fb303_style(library, [&](std::string_view name, std::int64_t v) {
        served.exported.emplace_back(std::string(name), v);
      }));
  const std::int64_t ids[] = {1, 2, 3};
  const std::uint8_t rows[12] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
  cache.batch_set(ids, 3, rows, sizeof rows, 10);
  served.used_batch_remove = library.has("batch_remove");
  if (served.used_batch_remove) {
    EXPECT_EQ(cache.batch_remove(ids + 1, 1), 1u);
  } else {
    const std::int64_t kept[] = {1, 3};
    const std::uint8_t kept_rows[8] = {1, 1, 1, 1, 3, 3, 3, 3};
    cache.batch_set(kept, 2, kept_rows, sizeof kept_rows, 11);
    EXPECT_EQ(cache.evict_older_than(11), 1u);
  }
  std::uint8_t out[12];
  served.batch = cache.batch_get(ids, 3, out, sizeof out);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[4], 0);
  EXPECT_EQ(out[8], 3);
  served.window = cache.read_hit_rate_stats();
  served.compacted = library.has("compact");
  if (served.compacted) {
    cache.compact();
  }
  served.rows = cache.info().rows;
  return served;
}

void expect_served(const Served& served) {
  EXPECT_EQ(served.batch.hits, 2u);
  EXPECT_EQ(served.batch.misses, 1u);
  EXPECT_EQ(served.window.hits, 2u);
  EXPECT_EQ(served.window.total, 3u);
  EXPECT_EQ(served.rows, 2u);
  const std::vector<std::pair<std::string, std::int64_t>> exported = {
      {"kvzch.inference.read_hit_count", 2},
      {"kvzch.inference.read_miss_count", 1},
      {"kvzch.inference.read_total_count", 3}};
  EXPECT_EQ(served.exported, exported);
}

TEST(Library, AnswersVersionAndFeatures) {
  const kvzch::Library library = the_library();
  // Built from the same sources as this header.
  EXPECT_EQ(library.abi_version(),
            static_cast<std::uint32_t>(KVZCH_ABI_MAJOR) << 16 | KVZCH_ABI_MINOR);
  EXPECT_EQ(library.version(), KVZCH_EXPECTED_VERSION);
  EXPECT_EQ(library.api().struct_size, sizeof(kvzch_api_v1));
  for (const char* feature : {"read_hit_rate_stats", "cumulative_read_stats", "stat_sink",
                              "global_stat_sink", "evict_older_than", "batch_remove",
                              "plugin_api_v1"}) {
    EXPECT_TRUE(library.has(feature)) << feature;
  }
  EXPECT_FALSE(library.has("no_such_feature"));
  EXPECT_FALSE(library.has(""));
  // has() copies the view into a NUL-terminated string: a view into a longer
  // buffer must not run on.
  EXPECT_TRUE(library.has(std::string_view("stat_sink_and_more", 9)));
  EXPECT_STREQ(library.entry(&kvzch_api_v1::stat_name, "kvzch_stat_name")(KVZCH_STAT_READ_HIT_COUNT),
               "kvzch.inference.read_hit_count");
}

TEST(Library, ServesTheHostCode) {
  const Served served = serve(the_library());
  EXPECT_TRUE(served.used_batch_remove);
  EXPECT_TRUE(served.compacted);
  expect_served(served);
}

TEST(Library, CopiesAndMovesShareOneLibrary) {
  const kvzch::Library library = the_library();
  kvzch::Library copy = library;
  const kvzch::Library moved = std::move(copy);
  EXPECT_EQ(&copy.api(), &library.api()) << "a moved-from Library is still the library";
  EXPECT_EQ(&moved.api(), &library.api());
  kvzch::Cache cache(moved, kvzch::Options().row_bytes(8));
  EXPECT_EQ(&cache.library().api(), &library.api());
}

TEST(Library, ErrorsCarryTheLibrarysStatusAndMessage) {
  kvzch::Cache cache(the_library(), kvzch::Options().row_bytes(16));
  const kvzch::Error e = short_buffer_error(cache);
  EXPECT_EQ(e.status(), KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(e.what()).rfind("INVALID_ARGUMENT: kvzch_cache_batch_get: out_len", 0), 0u)
      << e.what();
  EXPECT_THROW(kvzch::Cache(the_library(), kvzch::Options().row_bytes(0)), kvzch::Error);
}

TEST(Library, GlobalSinkOfTheLibrary) {
  const kvzch::Library library = the_library();
  kvzch::Cache a(library, kvzch::Options().row_bytes(8).name("a"));
  kvzch::Cache b(library, kvzch::Options().row_bytes(8).name("b"));
  std::vector<std::string> tables;
  {
    kvzch::SinkRegistration registration =
        library.on_any_batch([&](const kvzch_batch_event& e) { tables.emplace_back(e.table); });
    std::uint8_t out[8];
    const std::int64_t id = 1;
    static_cast<void>(a.batch_get(&id, 1, out, sizeof out));
    static_cast<void>(b.batch_get(&id, 1, out, sizeof out));
  }
  std::uint8_t out[8];
  const std::int64_t id = 1;
  static_cast<void>(a.batch_get(&id, 1, out, sizeof out));
  EXPECT_EQ(tables, (std::vector<std::string>{"a", "b"}));
}

#ifdef KVZCH_TEST_LINKED

TEST(Linked, CachesWithoutALibraryUseTheLinkedOne) {
  const kvzch::Cache cache(kvzch::Options().row_bytes(8));
  EXPECT_EQ(&cache.library().api(), &kvzch::Library::linked().api());
}

#else

TEST(Dlopen, NothingOfKvzchIsLinked) {
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "kvzch_get_api"), nullptr);
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "kvzch_cache_create"), nullptr);
}

// The Library object is gone; the caches and registrations made from it
// keep the library loaded until they end.
TEST(Dlopen, CachesAndSinksKeepTheLibraryLoaded) {
  std::vector<std::uint64_t> hits;
  kvzch::Cache cache(kvzch::Library::open(KVZCH_LIBRARY_PATH), kvzch::Options().row_bytes(8));
  kvzch::SinkRegistration global = kvzch::Library::open(KVZCH_LIBRARY_PATH)
                                       .on_any_batch([&](const kvzch_batch_event& e) {
                                         hits.push_back(e.stats.hits);
                                       });
  const std::int64_t id = 7;
  const std::uint8_t row[8] = {7};
  cache.batch_set(&id, 1, row, sizeof row, 1);
  std::uint8_t out[8];
  EXPECT_EQ(cache.batch_get(&id, 1, out, sizeof out).hits, 1u);
  global.reset();
  EXPECT_EQ(hits, (std::vector<std::uint64_t>{1}));
}

// destroy_counting_shim.c: the real library, counting the caches destroyed.
// A cache lives until the last of its Cache and the registrations from its
// on_batch ends.
class CacheLifetime : public ::testing::Test {
 protected:
  std::size_t destroyed() const {
    void* shim = dlopen(KVZCH_COUNTING_SHIM_PATH, RTLD_NOW | RTLD_NOLOAD);
    void* symbol = shim != nullptr ? dlsym(shim, "kvzch_shim_destroyed_caches") : nullptr;
    EXPECT_NE(symbol, nullptr) << "the shim is loaded and counts";
    std::size_t (*count)(void) = nullptr;
    std::memcpy(&count, &symbol, sizeof count);
    const std::size_t destroyed = count != nullptr ? count() : 0;
    if (shim != nullptr) {
      dlclose(shim);
    }
    return destroyed;
  }

  kvzch::Library shim_ = kvzch::Library::open(KVZCH_COUNTING_SHIM_PATH);
};

TEST_F(CacheLifetime, ARegistrationOutlivingItsCacheDestroysItWhenItEnds) {
  const std::size_t before = destroyed();
  kvzch::SinkRegistration registration;
  {
    kvzch::Cache cache(shim_, kvzch::Options().row_bytes(8));
    registration = cache.on_batch([](const kvzch_batch_event&) {});
  }
  EXPECT_EQ(destroyed(), before) << "the registration keeps the cache";
  EXPECT_EQ(registration.unregister(), KVZCH_STATUS_OK);
  EXPECT_EQ(destroyed(), before + 1);
}

TEST_F(CacheLifetime, ACacheOutlivingItsRegistrationsDestroysItAlone) {
  const std::size_t before = destroyed();
  {
    kvzch::Cache cache(shim_, kvzch::Options().row_bytes(8));
    {
      kvzch::SinkRegistration registration = cache.on_batch([](const kvzch_batch_event&) {});
    }
    EXPECT_EQ(destroyed(), before);
  }
  EXPECT_EQ(destroyed(), before + 1);
}

TEST_F(CacheLifetime, AMovedCacheAndItsRegistrationsShareOneCache) {
  const std::size_t before = destroyed();
  kvzch::Cache first(shim_, kvzch::Options().row_bytes(8));
  kvzch::SinkRegistration registration = first.on_batch([](const kvzch_batch_event&) {});
  {
    kvzch::Cache second(std::move(first));
  }
  EXPECT_EQ(destroyed(), before);
  registration.reset();
  EXPECT_EQ(destroyed(), before + 1);
  EXPECT_THROW(static_cast<void>(first.info()), kvzch::Error) << "moved from";
}

TEST_F(CacheLifetime, MovingACacheOntoAnotherDestroysTheOneItReplaces) {
  const std::size_t before = destroyed();
  kvzch::Cache kept(shim_, kvzch::Options().row_bytes(8).name("kept"));
  kvzch::Cache replaced(shim_, kvzch::Options().row_bytes(8).name("replaced"));
  replaced = std::move(kept);
  EXPECT_EQ(destroyed(), before + 1);
  std::string seen;
  kvzch::SinkRegistration registration =
      replaced.on_batch([&](const kvzch_batch_event& e) { seen = e.table; });
  const std::int64_t id = 1;
  std::uint8_t out[8];
  static_cast<void>(replaced.batch_get(&id, 1, out, sizeof out));
  EXPECT_EQ(seen, "kept");
}

// A reset() refused from inside a sink leaks its hold on the cache with the
// callable, though the Cache still owned it then: when that Cache ends on
// another thread, dropping the hold instead could destroy the cache inside
// the lookup this thread runs. The leaked callable is never called again.
TEST_F(CacheLifetime, AResetRefusedInsideASinkKeepsItsCacheAfterTheCacheEnds) {
  const std::size_t before = destroyed();
  kvzch::Cache inner(shim_, kvzch::Options().row_bytes(8));
  kvzch::SinkRegistration outer_registration;
  bool nest = true;
  int refused = -1;
  const std::int64_t id = 1;
  std::uint8_t out[8];
  {
    const IntendedLeak leak;  // the outer cache, which the refused reset's hold keeps
    kvzch::Cache outer(shim_, kvzch::Options().row_bytes(8));
    outer_registration = outer.on_batch([&](const kvzch_batch_event&) {
      if (std::exchange(nest, false)) static_cast<void>(inner.batch_get(&id, 1, out, sizeof out));
    });
    kvzch::SinkRegistration inner_registration = inner.on_batch([&](const kvzch_batch_event&) {
      refused = outer_registration.unregister();
      outer_registration.reset();
    });
    static_cast<void>(outer.batch_get(&id, 1, out, sizeof out));
  }
  EXPECT_EQ(refused, KVZCH_STATUS_WOULD_DEADLOCK);
  EXPECT_FALSE(outer_registration.active());
  EXPECT_EQ(destroyed(), before) << "the refused reset's hold outlived the Cache";
}

TEST(Dlopen, AMissingFileIsNotFound) {
  try {
    static_cast<void>(kvzch::Library::open("libkvzch_that_does_not_exist.so"));
    FAIL() << "no exception";
  } catch (const kvzch::Unsupported& e) {
    FAIL() << "a missing file is not an unsupported library: " << e.what();
  } catch (const kvzch::Error& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_NOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("libkvzch_that_does_not_exist.so"), std::string::npos)
        << e.what();
  }
}

TEST(Dlopen, ALibraryWithoutTheEntryPointIsUnsupported) {
  try {
    static_cast<void>(kvzch::Library::open("libm.so.6"));
    FAIL() << "no exception";
  } catch (const kvzch::Unsupported& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_UNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("kvzch_get_api"), std::string::npos) << e.what();
  }
}

// older_library_shim.c: a table that ends before the global-sink entries and
// lacks batch_remove, status_name and last_error_message.
class OlderLibrary : public ::testing::Test {
 protected:
  kvzch::Library older_ = kvzch::Library::open(KVZCH_SHIM_PATH);
};

TEST_F(OlderLibrary, SaysWhatItLacks) {
  EXPECT_LT(older_.api().struct_size, sizeof(kvzch_api_v1));
  EXPECT_EQ(older_.api().register_global_stat_sink, nullptr);
  EXPECT_FALSE(older_.has("batch_remove"));
  EXPECT_FALSE(older_.has("global_stat_sink"));
  EXPECT_TRUE(older_.has("stat_sink"));
  EXPECT_FALSE(older_.has("stat_sink_release"));
  EXPECT_EQ(older_.api().cache_register_stat_sink_with_release, nullptr);
  EXPECT_EQ(older_.version(), KVZCH_EXPECTED_VERSION);
}

// Without the 1.3 registrations, the registration alone holds its callable
// and frees it when it ends.
TEST_F(OlderLibrary, ARegistrationFreesItsCallableItself) {
  kvzch::Cache cache(older_, kvzch::Options().row_bytes(8));
  auto held = std::make_shared<int>(0);
  const std::weak_ptr<int> callable_state = held;
  kvzch::SinkRegistration registration =
      cache.on_batch([held = std::move(held)](const kvzch_batch_event&) { ++*held; });
  std::uint8_t out[8];
  const std::int64_t id = 1;
  static_cast<void>(cache.batch_get(&id, 1, out, sizeof out));
  EXPECT_EQ(*callable_state.lock(), 1);
  registration.reset();
  EXPECT_TRUE(callable_state.expired());
}

TEST_F(OlderLibrary, TheSameHostCodeDegrades) {
  const Served served = serve(older_);
  EXPECT_FALSE(served.used_batch_remove);
  EXPECT_FALSE(served.compacted);
  expect_served(served);
}

TEST_F(OlderLibrary, AMissingFunctionThrowsUnsupportedAndChangesNothing) {
  kvzch::Cache cache(older_, kvzch::Options().row_bytes(8));
  const std::int64_t id = 5;
  const std::uint8_t row[8] = {5};
  cache.batch_set(&id, 1, row, sizeof row, 1);
  try {
    static_cast<void>(cache.batch_remove(&id, 1));
    FAIL() << "no exception";
  } catch (const kvzch::Unsupported& e) {
    EXPECT_EQ(e.status(), KVZCH_STATUS_UNSUPPORTED);
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("UNSUPPORTED: kvzch_cache_batch_remove is not in ", 0), 0u) << what;
    EXPECT_NE(what.find(KVZCH_SHIM_PATH), std::string::npos) << what;
  }
  EXPECT_EQ(cache.info().rows, 1u);
}

// The shim's library lacks "capacity_eviction": a policy is refused before
// any cache is created, not sent to a library that might ignore it.
TEST_F(OlderLibrary, AnEvictionPolicyWithoutCapacityEvictionThrowsUnsupported) {
  const kvzch::Options options =
      kvzch::Options().row_bytes(8).max_rows(4).eviction_policy(kvzch::EvictionPolicy::LruApprox);
  try {
    kvzch::Cache cache(older_, options);
    FAIL() << "no exception";
  } catch (const kvzch::Unsupported& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("capacity_eviction"), std::string::npos) << what;
    EXPECT_NE(what.find(KVZCH_SHIM_PATH), std::string::npos) << what;
  }
  // The real library has the feature and takes the same options.
  kvzch::Cache cache(the_library(), options);
  const std::int64_t ids[] = {1, 2, 3, 4, 5};
  const std::vector<std::uint8_t> rows(sizeof ids / sizeof ids[0] * 8, 7);
  cache.batch_set(ids, 5, rows.data(), rows.size(), 1);
  const kvzch_cache_info info = cache.info();
  EXPECT_LE(info.rows, 4u);
  EXPECT_EQ(info.rows + info.capacity_evictions, 5u) << "the policy evicted to stay within max_rows";
}

TEST_F(OlderLibrary, EntriesPastItsTableThrowUnsupported) {
  kvzch::Cache older_cache(older_, kvzch::Options().row_bytes(8));
  EXPECT_THROW(older_cache.compact(), kvzch::Unsupported);
  int calls = 0;
  EXPECT_THROW(
      static_cast<void>(older_.on_any_batch([&](const kvzch_batch_event&) { ++calls; })),
      kvzch::Unsupported);
  // Nothing was registered: a lookup through the real library calls nothing.
  kvzch::Cache cache(the_library(), kvzch::Options().row_bytes(8));
  std::uint8_t out[8];
  const std::int64_t id = 1;
  static_cast<void>(cache.batch_get(&id, 1, out, sizeof out));
  EXPECT_EQ(calls, 0);
}

// Without status_name and last_error_message the failure still reaches the
// host, with its status and the function that failed.
TEST_F(OlderLibrary, ErrorsWithoutNamesOrMessages) {
  kvzch::Cache cache(older_, kvzch::Options().row_bytes(16));
  const kvzch::Error e = short_buffer_error(cache);
  EXPECT_EQ(e.status(), KVZCH_STATUS_INVALID_ARGUMENT);
  EXPECT_STREQ(e.what(), "status 2: kvzch_cache_batch_get");
  EXPECT_TRUE(e.library_message().empty());
}

#endif

}  // namespace
