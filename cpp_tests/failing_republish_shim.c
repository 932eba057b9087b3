/*
 * Stands in for a libkvzch whose publishes fail after the first version, for
 * predictor_demo's test of a republish that meets an error. It hands out the
 * real library's table (KVZCH_REAL_LIBRARY_PATH) with cache_batch_set wrapped:
 * a publish stamped later than the first one it saw reaches the real library
 * one byte short of its rows, which refuses it with its own status and message
 * (INVALID_ARGUMENT, "rows_len ... < n * row_bytes") and changes nothing.
 */
#include "real_library_table.h"

static batch_set_fn real_batch_set;
static atomic_uint_least64_t first_stamp; /* is_later_version's */

static kvzch_status failing_batch_set(kvzch_cache *cache, const int64_t *ids, size_t n,
                                      const void *rows, size_t rows_len, uint32_t timestamp) {
  if (is_later_version(&first_stamp, timestamp) && rows_len > 0) {
    --rows_len;
  }
  return real_batch_set(cache, ids, n, rows, rows_len, timestamp);
}

SHIM_WRAP_ENTRY(cache_batch_set, failing_batch_set, real_batch_set)
