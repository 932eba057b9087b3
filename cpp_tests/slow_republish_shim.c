/*
 * Stands in for a libkvzch whose republish is slower than the demo's traffic,
 * for predictor_demo's check that the end of the traffic waits for the
 * republish and still checks its eviction, instead of cutting it short. It
 * hands out the real library's table (KVZCH_REAL_LIBRARY_PATH) with
 * cache_batch_set wrapped: each batch_set stamped later than the first one it
 * saw sleeps half a second before it reaches the real library unchanged.
 */
#define _POSIX_C_SOURCE 200809L

#include "real_library_table.h"

#include <time.h>

static batch_set_fn real_batch_set;
static atomic_uint_least64_t first_stamp; /* is_later_version's */

static kvzch_status slow_batch_set(kvzch_cache *cache, const int64_t *ids, size_t n,
                                   const void *rows, size_t rows_len, uint32_t timestamp) {
  if (is_later_version(&first_stamp, timestamp)) {
    const struct timespec half_a_second = {0, 500000000L};
    nanosleep(&half_a_second, NULL);
  }
  return real_batch_set(cache, ids, n, rows, rows_len, timestamp);
}

SHIM_WRAP_ENTRY(cache_batch_set, slow_batch_set, real_batch_set)
