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

SHIM_WRAP_ENTRY(cache_destroy, counting_cache_destroy, real_cache_destroy)
