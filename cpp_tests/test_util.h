// Helpers shared by the C API suites: plain C calls, owned by the test.
#ifndef KVZCH_TEST_UTIL_H
#define KVZCH_TEST_UTIL_H

#include "kvzch.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace kvzch_test {

struct CacheDeleter {
  void operator()(kvzch_cache* cache) const { kvzch_cache_destroy(cache); }
};
using CachePtr = std::unique_ptr<kvzch_cache, CacheDeleter>;

inline std::string last_error() {
  std::string buf(kvzch_last_error_message(nullptr, 0) + 1, '\0');
  const size_t full = kvzch_last_error_message(&buf[0], buf.size());
  buf.resize(full < buf.size() ? full : buf.size() - 1);
  return buf;
}

inline kvzch_options options(uint32_t row_bytes, uint32_t miss_policy = KVZCH_MISS_ZERO_FILL,
                             const char* name = nullptr) {
  kvzch_options opts;
  kvzch_options_init(&opts);
  opts.row_bytes = row_bytes;
  opts.miss_policy = miss_policy;
  opts.name = name;
  return opts;
}

// Returns nullptr (and lets the caller's ASSERT fail) rather than throwing,
// so the suites stay plain C-API code.
inline CachePtr make_cache(const kvzch_options& opts) {
  kvzch_cache* cache = nullptr;
  if (kvzch_cache_create(&opts, &cache) != KVZCH_STATUS_OK) {
    return nullptr;
  }
  return CachePtr(cache);
}

inline CachePtr make_cache(uint32_t row_bytes, uint32_t miss_policy = KVZCH_MISS_ZERO_FILL,
                           const char* name = nullptr) {
  return make_cache(options(row_bytes, miss_policy, name));
}

// Row `id` at version `v`: every byte derived from both, and every byte of
// the id in each 8 bytes of the row, so a row copied from the wrong id (even
// one that differs only in its high bits, as INT64_MIN and 0 do) or a torn row
// shows up as a mismatch.
inline void fill_row(uint8_t* row, size_t row_bytes, int64_t id, uint32_t version) {
  for (size_t b = 0; b < row_bytes; ++b) {
    const uint8_t id_byte = static_cast<uint8_t>(static_cast<uint64_t>(id) >> (8 * (b % 8)));
    row[b] = static_cast<uint8_t>(id_byte ^ (version * 7u + b * 31u));
  }
}

inline std::vector<uint8_t> rows_for(const std::vector<int64_t>& ids, size_t row_bytes,
                                     uint32_t version) {
  std::vector<uint8_t> rows(ids.size() * row_bytes);
  for (size_t i = 0; i < ids.size(); ++i) {
    fill_row(rows.data() + i * row_bytes, row_bytes, ids[i], version);
  }
  return rows;
}

inline bool row_equals(const uint8_t* row, size_t row_bytes, int64_t id, uint32_t version) {
  std::vector<uint8_t> expected(row_bytes);
  fill_row(expected.data(), row_bytes, id, version);
  return std::memcmp(row, expected.data(), row_bytes) == 0;
}

/* The cache's info; when the call fails, rows is UINT64_MAX and the rest 0. */
inline kvzch_cache_info info_of(const kvzch_cache* cache) {
  kvzch_cache_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  if (kvzch_cache_get_info(cache, &info) != KVZCH_STATUS_OK) {
    std::memset(&info, 0, sizeof info);
    info.rows = UINT64_MAX;
  }
  return info;
}

inline uint64_t rows_in(const kvzch_cache* cache) { return info_of(cache).rows; }

}  // namespace kvzch_test

#endif  // KVZCH_TEST_UTIL_H
