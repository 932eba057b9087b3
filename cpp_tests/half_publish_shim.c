/*
 * Stands in for a libkvzch that loses rows silently, for predictor_demo's
 * check that every stored id hits. It hands out the real library's table
 * (KVZCH_REAL_LIBRARY_PATH) with cache_batch_set wrapped: each publish stores
 * the first half of its rows and reports success for all of them.
 */
#include "real_library_table.h"

static batch_set_fn real_batch_set;

static kvzch_status half_batch_set(kvzch_cache *cache, const int64_t *ids, size_t n,
                                   const void *rows, size_t rows_len, uint32_t timestamp) {
  const size_t kept = n / 2;
  const size_t kept_len = n == 0 ? rows_len : rows_len / n * kept;
  return real_batch_set(cache, ids, kept, rows, kept_len, timestamp);
}

SHIM_WRAP_ENTRY(cache_batch_set, half_batch_set, real_batch_set)
