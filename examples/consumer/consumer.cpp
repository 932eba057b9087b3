// A host outside the kvzch tree: publishes two rows, looks up three ids and
// checks the rows, the hit mask, the batch's counts, the sink's, and both
// read counters. Exits non-zero on any mismatch, so that building and running
// it proves a way of consuming kvzch works end to end.
#include <kvzch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

int mismatches = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "kvzch_consumer: mismatch: %s\n", what);
    ++mismatches;
  }
}

}  // namespace

int main() {
  try {
    kvzch::Cache cache(kvzch::Options().row_bytes(8).name("consumer"));
    std::uint64_t sink_hits = 0;
    std::uint64_t sink_total = 0;
    const kvzch::SinkRegistration sink = cache.on_batch([&](const kvzch_batch_event& event) {
      sink_hits += event.stats.hits;
      sink_total += event.stats.total;
    });

    const std::int64_t ids[] = {10, 20};
    std::uint8_t rows[16];
    for (std::size_t i = 0; i < sizeof rows; ++i) rows[i] = static_cast<std::uint8_t>(i + 1);
    cache.batch_set(ids, 2, rows, sizeof rows, 1);

    const std::int64_t query[] = {20, 30, 10};
    std::uint8_t out[24];
    std::uint8_t mask[3];
    std::memset(out, 0xEE, sizeof out);
    const kvzch_batch_stats stats = cache.batch_get(query, 3, out, sizeof out, mask);
    const std::uint8_t zeros[8] = {};
    expect(std::memcmp(out, rows + 8, 8) == 0, "the row of id 20");
    expect(std::memcmp(out + 8, zeros, 8) == 0, "the zero-filled miss of id 30");
    expect(std::memcmp(out + 16, rows, 8) == 0, "the row of id 10");
    expect(mask[0] == 1 && mask[1] == 0 && mask[2] == 1, "the hit mask");
    expect(stats.hits == 2 && stats.misses == 1 && stats.total == 3, "the batch's counts");
    expect(sink_hits == 2 && sink_total == 3, "the sink's counts");

    const kvzch_read_stats window = cache.read_hit_rate_stats();
    expect(window.hits == 2 && window.misses == 1 && window.total == 3, "the read window");
    expect(cache.read_hit_rate_stats().total == 0, "a fresh window after the read");
    const kvzch_read_stats cumulative = cache.cumulative_read_stats();
    expect(cumulative.hits == 2 && cumulative.total == 3, "the cumulative counts");
    expect(cache.info().rows == 2, "the rows stored");

    const kvzch::Library library = cache.library();
    expect(library.abi_version() >> 16 == KVZCH_ABI_MAJOR, "the ABI major");
    std::printf("kvzch_consumer: libkvzch %s, ABI %u.%u: %s\n", library.version().c_str(),
                static_cast<unsigned>(library.abi_version() >> 16),
                static_cast<unsigned>(library.abi_version() & 0xFFFFu),
                mismatches == 0 ? "ok" : "MISMATCH");
  } catch (const kvzch::Error& e) {
    std::fprintf(stderr, "kvzch_consumer: %s\n", e.what());
    return 1;
  }
  return mismatches == 0 ? 0 : 1;
}
