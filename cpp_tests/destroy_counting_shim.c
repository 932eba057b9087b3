/*
 * Stands in for libkvzch in the tests of kvzch.hpp's cache lifetimes: the real
 * library's table (KVZCH_REAL_LIBRARY_PATH) with cache_destroy wrapped to
 * count the caches it destroys, which kvzch_shim_destroyed_caches() answers.
 */
#include "real_library_table.h"

#include <stdatomic.h>

typedef void (*cache_destroy_fn)(kvzch_cache *);

static cache_destroy_fn real_cache_destroy;
static atomic_size_t destroyed_caches;

static void counting_cache_destroy(kvzch_cache *cache) {
  if (cache != NULL) {
    atomic_fetch_add(&destroyed_caches, 1);
  }
  real_cache_destroy(cache);
}

SHIM_EXPORT size_t kvzch_shim_destroyed_caches(void);

size_t kvzch_shim_destroyed_caches(void) { return atomic_load(&destroyed_caches); }

SHIM_EXPORT kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size);

kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size) {
  kvzch_status status = real_library_table(abi_major, table, table_size);

  if (status != KVZCH_STATUS_OK) {
    return status;
  }
  real_cache_destroy = table->cache_destroy;
  table->cache_destroy = counting_cache_destroy;
  return KVZCH_STATUS_OK;
}
