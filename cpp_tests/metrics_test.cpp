// The metrics pieces of kvzch.hpp: WindowedSum and SumStats (the fb303-style
// side), fb303_style_by_table, the Prometheus name mapping, PrometheusText,
// PrometheusReadStats and write_cache_info, each against exact expected
// values, and fed by a real cache where a sink is involved.
#include "failing_allocation.h"
#include "kvzch.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <clocale>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using std::chrono::seconds;
using Clock = kvzch::WindowedSum::Clock;

// A fixed origin on a whole second, so `at(s)` is exactly second s.
Clock::time_point at(double s) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(1000000.0 + s)));
}

kvzch::Cache make_cache(const char* name, std::uint32_t row_bytes = 8) {
  return kvzch::Cache(kvzch::Options().row_bytes(row_bytes).name(name));
}

std::vector<std::int64_t> first_ids(std::size_t n) {
  std::vector<std::int64_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::int64_t>(i);
  return ids;
}

// Publishes ids 0..n-1.
void publish(kvzch::Cache& cache, std::size_t n) {
  const std::vector<std::int64_t> ids = first_ids(n);
  const std::vector<unsigned char> rows(n * cache.row_bytes(), 7);
  cache.batch_set(ids.data(), n, rows.data(), rows.size(), 1);
}

// Looks up ids 0..n-1 in one batch.
void get(kvzch::Cache& cache, std::size_t n) {
  const std::vector<std::int64_t> ids = first_ids(n);
  std::vector<unsigned char> out(n * cache.row_bytes());
  static_cast<void>(cache.batch_get(ids.data(), n, out.data(), out.size()));
}

TEST(WindowedSum, SumsTheWindowEndingNowAndAllTime) {
  kvzch::WindowedSum sum(seconds(60));
  sum.add(5, at(0.2));
  sum.add(7, at(0.9));
  sum.add(11, at(30.5));
  sum.add(13, at(59.0));
  EXPECT_EQ(sum.sum(seconds(60), at(59.5)), 36);
  EXPECT_EQ(sum.sum(seconds(30), at(59.5)), 24);  // seconds 30..59
  EXPECT_EQ(sum.sum(seconds(1), at(59.5)), 13);
  // Second 0 leaves the 60 s window when second 60 begins.
  EXPECT_EQ(sum.sum(seconds(60), at(60.0)), 24);
  EXPECT_EQ(sum.sum(seconds(60), at(200.0)), 0);
  EXPECT_EQ(sum.total(), 36);
  EXPECT_EQ(sum.longest_window(), seconds(60));
}

TEST(WindowedSum, ReusesItsRingAcrossLaps) {
  kvzch::WindowedSum sum(seconds(3));
  for (int s = 0; s < 10; ++s) sum.add(s + 1, at(s));  // 1..10 in seconds 0..9
  EXPECT_EQ(sum.sum(seconds(3), at(9.0)), 8 + 9 + 10);
  EXPECT_EQ(sum.sum(seconds(2), at(9.0)), 9 + 10);
  // Seconds 8 and 9, once second 10 begins; second 7's bucket is stale.
  EXPECT_EQ(sum.sum(seconds(3), at(10.0)), 9 + 10);
  EXPECT_EQ(sum.total(), 55);
}

TEST(WindowedSum, AnAdditionStampedEarlierCountsInTheLatestSecond) {
  kvzch::WindowedSum sum(seconds(2));
  sum.add(1, at(5.0));
  sum.add(2, at(3.0));  // older than the latest: lands in second 5, overwrites nothing
  EXPECT_EQ(sum.sum(seconds(1), at(5.0)), 3);
  EXPECT_EQ(sum.sum(seconds(2), at(6.0)), 3);
  EXPECT_EQ(sum.total(), 3);
}

TEST(WindowedSum, ASumBehindTheLatestAdditionStillHasItsFirstSecond) {
  // SumStats::counters reads the clock before it sums: a request thread may
  // add in the next second meanwhile. With a ring as long as the window that
  // addition took second 0's bucket, and the sum came out 0.
  kvzch::WindowedSum sum(seconds(60));
  sum.add(1, at(0.5));
  sum.add(1, at(60.5));
  EXPECT_EQ(sum.sum(seconds(60), at(59.5)), 1);
  EXPECT_EQ(sum.sum(seconds(60), at(60.5)), 1);
}

TEST(WindowedSum, RejectsWindowsOutsideItsRing) {
  EXPECT_THROW(static_cast<void>(kvzch::WindowedSum(seconds(0))), std::invalid_argument);
  // A ring for these could not even be sized (length_error, not a window error).
  EXPECT_THROW(static_cast<void>(kvzch::WindowedSum(seconds::max())), std::invalid_argument);
  EXPECT_THROW(
      static_cast<void>(kvzch::WindowedSum(kvzch::WindowedSum::max_window() + seconds(1))),
      std::invalid_argument);
  kvzch::WindowedSum sum(seconds(10));
  EXPECT_THROW(static_cast<void>(sum.sum(seconds(11))), std::invalid_argument);
  EXPECT_THROW(static_cast<void>(sum.sum(seconds(0))), std::invalid_argument);
}

TEST(WindowedSum, CountsEveryAdditionFromManyThreads) {
  kvzch::WindowedSum sum(seconds(60));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&sum] {
      for (int i = 0; i < 10000; ++i) sum.add(3);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(sum.total(), 4 * 10000 * 3);
  EXPECT_EQ(sum.sum(seconds(60)), 4 * 10000 * 3);
}

TEST(SumStats, ExportsLikeFb303GetCounters) {
  kvzch::SumStats stats({seconds(60), seconds(600)});
  stats.add_stat_value("a.b", 4, at(0.0));
  stats.add_stat_value("a.b", 6, at(100.0));
  stats.add_stat_value("c", 1, at(100.0));
  const std::map<std::string, std::int64_t> expected = {
      {"a.b.sum", 10}, {"a.b.sum.60", 6}, {"a.b.sum.600", 10},
      {"c.sum", 1},    {"c.sum.60", 1},   {"c.sum.600", 1},
  };
  EXPECT_EQ(stats.counters(at(100.5)), expected);
  EXPECT_EQ(stats.sum("a.b", seconds(600), at(100.5)), 10);
  EXPECT_EQ(stats.total("a.b"), 10);
  EXPECT_EQ(stats.total("never"), 0);
  EXPECT_EQ(stats.sum("never", seconds(60)), 0);
}

// The longest window there is: its ring (16 bytes a second) cannot be
// allocated, so every addition of a new name throws, and leaves the registry
// as it was, the name unknown.
TEST(SumStats, AnAdditionWhoseRingCannotBeAllocatedLeavesNoEntry) {
  kvzch::SumStats stats({kvzch::WindowedSum::max_window()});
  EXPECT_THROW(stats.add_stat_value("a", 1), std::bad_alloc);
  EXPECT_THROW(stats.add_stat_value("a", 1), std::bad_alloc) << "tried again, not half made";
  EXPECT_EQ(stats.total("a"), 0);
  EXPECT_TRUE(stats.counters().empty());
}

// Each allocation the sink makes in turn fails on a registry that has not
// seen the batch's names: the batch's six additions land all or none, so
// hits + misses = total under both names, whichever name's ring failed.
TEST(SumStats, AsASinkAddsABatchWholeOrNotAtAll) {
  kvzch_batch_event event{};
  event.struct_size = sizeof event;
  event.table = "user";
  event.stats.hits = 3;
  event.stats.misses = 1;
  event.stats.total = 4;
  const std::vector<std::string> names = {
      "kvzch.inference.read_hit_count",   "kvzch.inference.read_hit_count.user",
      "kvzch.inference.read_miss_count",  "kvzch.inference.read_miss_count.user",
      "kvzch.inference.read_total_count", "kvzch.inference.read_total_count.user"};
  const std::vector<std::int64_t> whole = {3, 3, 1, 1, 4, 4};
  const std::vector<std::int64_t> none(names.size(), 0);
  long failures = 0;
  for (long allowed = 0;; ++allowed) {
    kvzch::SumStats stats;
    auto sink = stats.sink();
    bool threw = false;
    try {
      const kvzch_test::AllocationFailure failure(allowed);
      sink(event);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    std::vector<std::int64_t> totals;
    for (const std::string& name : names) totals.push_back(stats.total(name));
    EXPECT_EQ(totals, threw ? none : whole) << "allocation " << allowed << " failed";
    if (!threw) break;
    ++failures;
  }
  // A map node and a ring for each of the six names at least.
  EXPECT_GE(failures, 12);
}

TEST(SumStats, WithNoWindowExportsOnlyTheAllTimeSum) {
  kvzch::SumStats stats({});  // as the README writes it
  stats.add_stat_value("a.b", 4, at(0.0));
  const std::map<std::string, std::int64_t> expected = {{"a.b.sum", 4}};
  EXPECT_EQ(stats.counters(at(100.5)), expected);
}

TEST(SumStats, RejectsBadWindows) {
  EXPECT_THROW(static_cast<void>(kvzch::SumStats({seconds(0)})), std::invalid_argument);
  // Rejected here, not on the first addition inside a sink.
  EXPECT_THROW(static_cast<void>(kvzch::SumStats({seconds::max()})), std::invalid_argument);
  kvzch::SumStats stats;  // 60 s
  EXPECT_THROW(static_cast<void>(stats.sum("x", seconds(61))), std::invalid_argument);
  stats.add_stat_value("x", 1);
  EXPECT_THROW(static_cast<void>(stats.sum("x", seconds(61))), std::invalid_argument);
}

TEST(SumStats, AsASinkMatchesTheCumulativeCountsPerTableAndInAggregate) {
  kvzch::SumStats stats;
  kvzch::Cache user = make_cache("user");
  kvzch::Cache ads = make_cache("ads");
  kvzch::SinkRegistration reg = kvzch::on_any_batch(stats.sink());
  publish(user, 30);
  get(user, 40);
  get(user, 5);
  publish(ads, 2);
  get(ads, 3);
  reg.reset();
  const kvzch_read_stats u = user.cumulative_read_stats();
  const kvzch_read_stats a = ads.cumulative_read_stats();
  const auto i64 = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  EXPECT_EQ(stats.total("kvzch.inference.read_hit_count.user"), i64(u.hits));
  EXPECT_EQ(stats.total("kvzch.inference.read_miss_count.user"), i64(u.misses));
  EXPECT_EQ(stats.total("kvzch.inference.read_total_count.user"), i64(u.total));
  EXPECT_EQ(stats.total("kvzch.inference.read_hit_count.ads"), i64(a.hits));
  EXPECT_EQ(stats.total("kvzch.inference.read_hit_count"), i64(u.hits + a.hits));
  EXPECT_EQ(stats.total("kvzch.inference.read_total_count"), 48);
  EXPECT_EQ(u.hits, 35u);  // 30 of the first 40, all 5 of the second batch
  EXPECT_EQ(stats.counters().at("kvzch.inference.read_miss_count.ads.sum.60"), 1);
}

TEST(TableStatAdapter, CallsTheCanonicalThenThePerTableNameForEachCount) {
  std::vector<std::pair<std::string, std::int64_t>> calls;
  kvzch::Cache cache = make_cache("item");
  {
    kvzch::SinkRegistration reg =
        cache.on_batch(kvzch::fb303_style_by_table([&](std::string_view name, std::int64_t v) {
          calls.emplace_back(name, v);
        }));
    publish(cache, 3);
    get(cache, 4);
  }
  const std::vector<std::pair<std::string, std::int64_t>> expected = {
      {"kvzch.inference.read_hit_count", 3},   {"kvzch.inference.read_hit_count.item", 3},
      {"kvzch.inference.read_miss_count", 1},  {"kvzch.inference.read_miss_count.item", 1},
      {"kvzch.inference.read_total_count", 4}, {"kvzch.inference.read_total_count.item", 4},
  };
  EXPECT_EQ(calls, expected);
}

TEST(PrometheusName, MapsFb303NamesToValidPrometheusNames) {
  EXPECT_EQ(kvzch::prometheus_name("kvzch.inference.read_hit_count"),
            "kvzch_inference_read_hit_count");
  EXPECT_EQ(kvzch::prometheus_counter_name("kvzch.inference.read_hit_count"),
            "kvzch_inference_read_hit_count_total");
  EXPECT_EQ(kvzch::prometheus_counter_name("kvzch.inference.read_total_count"),
            "kvzch_inference_read_total_count_total");
  EXPECT_EQ(kvzch::prometheus_counter_name("requests_total"), "requests_total");
  EXPECT_EQ(kvzch::prometheus_name("a:b-c/d e"), "a_b_c_d_e");
  EXPECT_EQ(kvzch::prometheus_name("9lives"), "_9lives");
  EXPECT_EQ(kvzch::prometheus_name(""), "_");
  EXPECT_EQ(kvzch::prometheus_counter_name("total"), "total_total");
}

TEST(PrometheusText, GroupsSamplesByMetricUnderOneHelpAndType) {
  kvzch::PrometheusText text;
  text.counter("a_total", "First.", {{"table", "x"}}, std::uint64_t{1});
  text.gauge("b_bytes", "Second.", {}, 2.5);
  text.counter("a_total", "ignored: the first help stays", {{"table", "y"}},
               std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(text.str(),
            "# HELP a_total First.\n"
            "# TYPE a_total counter\n"
            "a_total{table=\"x\"} 1\n"
            "a_total{table=\"y\"} 18446744073709551615\n"
            "# HELP b_bytes Second.\n"
            "# TYPE b_bytes gauge\n"
            "b_bytes 2.5\n");
}

TEST(PrometheusText, EscapesLabelValuesAndHelp) {
  kvzch::PrometheusText text;
  text.gauge("g", "back\\slash\nnewline \"quotes\" stay", {{"a", "q\"b\\n\nx"}, {"b", ""}}, -3);
  EXPECT_EQ(text.str(),
            "# HELP g back\\\\slash\\nnewline \"quotes\" stay\n"
            "# TYPE g gauge\n"
            "g{a=\"q\\\"b\\\\n\\nx\",b=\"\"} -3\n");
}

// Floats of every shape PrometheusText writes, and the text they must give.
std::string floats_text() {
  kvzch::PrometheusText text;
  text.gauge("f", "", {{"v", "1"}}, 0.1);
  text.gauge("f", "", {{"v", "2"}}, 1e-5);
  text.gauge("f", "", {{"v", "3"}}, 1.0 / 3.0);
  text.gauge("f", "", {{"v", "4"}}, std::numeric_limits<double>::infinity());
  text.gauge("f", "", {{"v", "5"}}, -std::numeric_limits<double>::infinity());
  text.gauge("f", "", {{"v", "6"}}, std::numeric_limits<double>::quiet_NaN());
  text.gauge("f", "", {{"v", "7"}}, 12345678.0);
  text.gauge("f", "", {{"v", "8"}}, -2.5e300);
  text.histogram("d_seconds", "", {}, {0.00025, 1.5}, {1, 2, 3}, 0.75);
  return text.str();
}

constexpr std::string_view kFloatsText =
    "# HELP f \n# TYPE f gauge\n"
    "f{v=\"1\"} 0.1\n"
    "f{v=\"2\"} 1e-05\n"
    "f{v=\"3\"} 0.3333333333333333\n"
    "f{v=\"4\"} +Inf\n"
    "f{v=\"5\"} -Inf\n"
    "f{v=\"6\"} NaN\n"
    "f{v=\"7\"} 12345678\n"
    "f{v=\"8\"} -2.5e+300\n"
    "# HELP d_seconds \n# TYPE d_seconds histogram\n"
    "d_seconds_bucket{le=\"0.00025\"} 1\n"
    "d_seconds_bucket{le=\"1.5\"} 3\n"
    "d_seconds_bucket{le=\"+Inf\"} 6\n"
    "d_seconds_sum 0.75\n"
    "d_seconds_count 6\n";

TEST(PrometheusText, WritesFloatsShortestAndSpecialValuesByName) {
  EXPECT_EQ(floats_text(), kFloatsText);
}

// A host may set a locale whose decimal point is a comma (de_DE) or two
// bytes (ps_AF's U+066B); the scrape must still read 0.1. CMake builds both
// locales into KVZCH_TEST_LOCALE_DIR with localedef.
TEST(PrometheusText, WritesADecimalPointWhateverTheLocale) {
#ifndef KVZCH_TEST_LOCALE_DIR
  GTEST_SKIP() << "CMake found no localedef and locale sources (Debian package locales) "
                  "to build the test's locales with";
#else
  ASSERT_EQ(setenv("LOCPATH", KVZCH_TEST_LOCALE_DIR, 1), 0);
  struct RestoreCLocale {
    ~RestoreCLocale() { std::setlocale(LC_ALL, "C"); }
  } restore;
  for (const char* name : {"de_DE.UTF-8", "ps_AF.UTF-8"}) {
    ASSERT_NE(std::setlocale(LC_ALL, name), nullptr) << name;
    // A locale with '.' for its point would check nothing.
    ASSERT_STRNE(std::localeconv()->decimal_point, ".") << name;
    EXPECT_EQ(floats_text(), kFloatsText) << name;
  }
#endif
}

TEST(PrometheusText, WritesHistogramsCumulatively) {
  kvzch::PrometheusText text;
  text.histogram("d_seconds", "Durations.", {{"table", "t"}}, {0.001, 0.01}, {2, 0, 3}, 0.125);
  EXPECT_EQ(text.str(),
            "# HELP d_seconds Durations.\n"
            "# TYPE d_seconds histogram\n"
            "d_seconds_bucket{table=\"t\",le=\"0.001\"} 2\n"
            "d_seconds_bucket{table=\"t\",le=\"0.01\"} 2\n"
            "d_seconds_bucket{table=\"t\",le=\"+Inf\"} 5\n"
            "d_seconds_sum{table=\"t\"} 0.125\n"
            "d_seconds_count{table=\"t\"} 5\n");
}

TEST(PrometheusText, ContentTypeIsTheTextFormats) {
  EXPECT_EQ(kvzch::PrometheusText::content_type, "text/plain; version=0.0.4; charset=utf-8");
}

TEST(PrometheusText, RejectsWhatTheFormatForbids) {
  kvzch::PrometheusText text;
  // Each refusal throws before the text changes: no family is left behind
  // without samples, or holding its name for a type.
  const auto refused = [&text](const auto& call) {
    const std::string before = text.str();
    EXPECT_THROW(call(), std::invalid_argument);
    EXPECT_EQ(text.str(), before);
  };
  refused([&] { text.counter("bad-name", "", {}, 1); });
  refused([&] { text.counter("1st", "", {}, 1); });
  refused([&] { text.counter("ok_total", "", {{"bad-label", "v"}}, 1); });
  refused([&] { text.counter("ok_total", "", {{"__reserved", "v"}}, 1); });
  refused([&] { text.gauge("ok", "", {{"bad-label", "v"}}, 1); });
  refused([&] { text.histogram("h", "", {{"bad-label", "v"}}, {1.0}, {1, 1}, 0.0); });
  refused([&] { text.histogram("h", "", {{"__reserved", "v"}}, {1.0}, {1, 1}, 0.0); });
  text.counter("c_total", "", {}, 1);
  refused([&] { text.gauge("c_total", "", {}, 1); });
  refused([&] { text.histogram("c_total", "", {}, {1.0}, {1, 1}, 0.0); });
  refused([&] { text.histogram("h", "", {}, {1.0}, {1}, 0.0); });
  refused([&] { text.histogram("h", "", {}, {2.0, 1.0}, {1, 1, 1}, 0.0); });
  // One `le` twice, or one Prometheus cannot parse.
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const std::vector<double>& bounds :
       {std::vector<double>{1.0, 1.0}, {1.0, inf}, {1.0, nan}, {nan}}) {
    refused([&] {
      text.histogram("h", "", {}, bounds, std::vector<std::uint64_t>(bounds.size() + 1), 0.0);
    });
    EXPECT_THROW(kvzch::PrometheusReadStats(kvzch::Library::linked(), bounds),
                 std::invalid_argument);
  }
  EXPECT_THROW(kvzch::PrometheusReadStats(kvzch::Library::linked(), {1.0, 1e10}),
               std::invalid_argument);
  refused([&] { text.histogram("h", "", {{"le", "1"}}, {1.0}, {1, 1}, 0.0); });
  // The names the refusals used are still free for any type.
  text.gauge("h", "", {}, 1);
  text.counter("ok_total", "", {}, 1);
  EXPECT_EQ(text.str(),
            "# HELP c_total \n# TYPE c_total counter\nc_total 1\n"
            "# HELP h \n# TYPE h gauge\nh 1\n"
            "# HELP ok_total \n# TYPE ok_total counter\nok_total 1\n");
}

kvzch_batch_event event(const char* table, std::uint64_t hits, std::uint64_t misses,
                        std::uint64_t duration_ns) {
  kvzch_batch_event e{};
  e.struct_size = sizeof e;
  e.table = table;
  e.stats = kvzch_batch_stats{hits, misses, hits + misses, duration_ns};
  return e;
}

TEST(PrometheusReadStats, RendersCountersAndTheDurationHistogramPerTable) {
  kvzch::PrometheusReadStats stats(kvzch::Library::linked(), {1e-5, 1e-4});
  stats.add_table("ads");
  stats.record(event("user", 3, 1, 10000));   // exactly on the first bound: le="1e-05"
  stats.record(event("user", 0, 2, 10001));   // just above it
  stats.record(event("user", 5, 0, 200000));  // above every bound
  kvzch::PrometheusText text;
  stats.write(text);
  EXPECT_EQ(text.str(),
            "# HELP kvzch_inference_read_hit_count_total Ids found by batch_get, by table.\n"
            "# TYPE kvzch_inference_read_hit_count_total counter\n"
            "kvzch_inference_read_hit_count_total{table=\"ads\"} 0\n"
            "kvzch_inference_read_hit_count_total{table=\"user\"} 8\n"
            "# HELP kvzch_inference_read_miss_count_total Ids batch_get did not find, by table.\n"
            "# TYPE kvzch_inference_read_miss_count_total counter\n"
            "kvzch_inference_read_miss_count_total{table=\"ads\"} 0\n"
            "kvzch_inference_read_miss_count_total{table=\"user\"} 3\n"
            "# HELP kvzch_inference_read_total_count_total Ids looked up by batch_get, by table.\n"
            "# TYPE kvzch_inference_read_total_count_total counter\n"
            "kvzch_inference_read_total_count_total{table=\"ads\"} 0\n"
            "kvzch_inference_read_total_count_total{table=\"user\"} 11\n"
            "# HELP kvzch_inference_batch_duration_seconds Lookup time of one batch_get, by table.\n"
            "# TYPE kvzch_inference_batch_duration_seconds histogram\n"
            "kvzch_inference_batch_duration_seconds_bucket{table=\"ads\",le=\"1e-05\"} 0\n"
            "kvzch_inference_batch_duration_seconds_bucket{table=\"ads\",le=\"0.0001\"} 0\n"
            "kvzch_inference_batch_duration_seconds_bucket{table=\"ads\",le=\"+Inf\"} 0\n"
            "kvzch_inference_batch_duration_seconds_sum{table=\"ads\"} 0\n"
            "kvzch_inference_batch_duration_seconds_count{table=\"ads\"} 0\n"
            "kvzch_inference_batch_duration_seconds_bucket{table=\"user\",le=\"1e-05\"} 1\n"
            "kvzch_inference_batch_duration_seconds_bucket{table=\"user\",le=\"0.0001\"} 2\n"
            "kvzch_inference_batch_duration_seconds_bucket{table=\"user\",le=\"+Inf\"} 3\n"
            "kvzch_inference_batch_duration_seconds_sum{table=\"user\"} 0.000220001\n"
            "kvzch_inference_batch_duration_seconds_count{table=\"user\"} 3\n");
  const kvzch::PrometheusReadStats::Counts user = stats.counts("user");
  EXPECT_EQ(user.hits, 8u);
  EXPECT_EQ(user.misses, 3u);
  EXPECT_EQ(user.total, 11u);
  EXPECT_EQ(user.batches, 3u);
  EXPECT_EQ(stats.counts("never").batches, 0u);
}

TEST(PrometheusReadStats, RejectsBoundsThatAreNotPositiveAndAscending) {
  EXPECT_THROW(static_cast<void>(kvzch::PrometheusReadStats(kvzch::Library::linked(), {0.0, 1.0})),
               std::invalid_argument);
  EXPECT_THROW(static_cast<void>(kvzch::PrometheusReadStats(kvzch::Library::linked(), {2.0, 1.0})),
               std::invalid_argument);
}

TEST(PrometheusReadStats, AsASinkOnManyThreadsMatchesTheCumulativeCounts) {
  kvzch::PrometheusReadStats stats;
  kvzch::Cache cache = make_cache("user", 16);
  publish(cache, 100);
  kvzch::SinkRegistration reg = cache.on_batch(stats.sink());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache] {
      for (int i = 0; i < 200; ++i) get(cache, 150);
    });
  }
  for (std::thread& t : threads) t.join();
  reg.reset();
  const kvzch_read_stats cumulative = cache.cumulative_read_stats();
  const kvzch::PrometheusReadStats::Counts counts = stats.counts("user");
  EXPECT_EQ(counts.hits, cumulative.hits);
  EXPECT_EQ(counts.misses, cumulative.misses);
  EXPECT_EQ(counts.total, cumulative.total);
  EXPECT_EQ(counts.batches, 800u);
  EXPECT_EQ(cumulative.hits, 800u * 100);
  EXPECT_EQ(cumulative.misses, 800u * 50);
}

TEST(WriteCacheInfo, WritesRowsAndMemoryGauges) {
  kvzch::Cache cache = make_cache("item", 64);
  publish(cache, 10);
  const kvzch_cache_info info = cache.info();
  kvzch::PrometheusText text;
  kvzch::write_cache_info(text, "item", info);
  EXPECT_EQ(text.str(),
            "# HELP kvzch_cache_rows Rows the cache holds.\n"
            "# TYPE kvzch_cache_rows gauge\n"
            "kvzch_cache_rows{table=\"item\"} 10\n"
            "# HELP kvzch_cache_memory_bytes Bytes the cache holds: rows, metadata, index and free space.\n"
            "# TYPE kvzch_cache_memory_bytes gauge\n"
            "kvzch_cache_memory_bytes{table=\"item\"} " + std::to_string(info.memory_bytes) + "\n");
  EXPECT_GT(info.memory_bytes, 10u * 64);
}

}  // namespace
