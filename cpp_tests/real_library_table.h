/*
 * For the shims that stand in for libkvzch in tests: fills a plugin table from
 * the real library (KVZCH_REAL_LIBRARY_PATH), which stays loaded, since the
 * functions in the table must outlive the call.
 */
#ifndef KVZCH_REAL_LIBRARY_TABLE_H
#define KVZCH_REAL_LIBRARY_TABLE_H

#include "kvzch.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <string.h>

/* A shim is built with hidden visibility and exports only what this marks. */
#define SHIM_EXPORT __attribute__((visibility("default")))

typedef kvzch_status (*kvzch_get_api_fn)(uint32_t, kvzch_api_v1 *, size_t);
/* The type of the entry the publish-faking shims wrap. */
typedef kvzch_status (*batch_set_fn)(kvzch_cache *, const int64_t *, size_t, const void *,
                                     size_t, uint32_t);

static inline kvzch_status real_library_table(uint32_t abi_major, kvzch_api_v1 *table,
                                              size_t table_size) {
  void *real = dlopen(KVZCH_REAL_LIBRARY_PATH, RTLD_NOW | RTLD_LOCAL);
  void *symbol = real != NULL ? dlsym(real, "kvzch_get_api") : NULL;
  kvzch_get_api_fn get_api;

  if (symbol == NULL) {
    return KVZCH_STATUS_INTERNAL;
  }
  memcpy(&get_api, &symbol, sizeof get_api);
  return get_api(abi_major, table, table_size);
}

/* For the shims that play a republish: whether a publish stamped `timestamp`
 * belongs to a later version than the first publish seen. `first_stamp` holds
 * that publish's timestamp plus one, 0 until it is seen. */
static inline int is_later_version(atomic_uint_least64_t *first_stamp, uint32_t timestamp) {
  uint_least64_t first = 0;
  const uint_least64_t stamp = (uint_least64_t)timestamp + 1;

  return !atomic_compare_exchange_strong(first_stamp, &first, stamp) && stamp > first;
}

/* Defines the shim's kvzch_get_api: the real library's table with its entry
 * `entry` replaced by `wrapper`, which calls the real one through `real`. */
#define SHIM_WRAP_ENTRY(entry, wrapper, real)                                                \
  SHIM_EXPORT kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table,             \
                                         size_t table_size);                                  \
  kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size) {    \
    kvzch_status status = real_library_table(abi_major, table, table_size);                   \
    if (status == KVZCH_STATUS_OK) {                                                          \
      (real) = table->entry;                                                                  \
      table->entry = (wrapper);                                                               \
    }                                                                                         \
    return status;                                                                            \
  }

#endif
