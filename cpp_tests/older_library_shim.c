/*
 * Stands in for an older, smaller libkvzch in the tests of hosts that must
 * degrade rather than crash. It loads the real library (KVZCH_REAL_LIBRARY_PATH)
 * and exports only kvzch_get_api, whose table lacks entries the way a library
 * built before them would:
 *   - the table ends before the global-sink entries: struct_size stops there
 *     and the rest is zeroed, as the ABI requires of a library whose table is
 *     shorter than the host's;
 *   - cache_batch_remove, status_name and last_error_message are NULL within it;
 *   - has_feature knows only the 1.0 features its table serves, so not
 *     "batch_remove", "global_stat_sink", nor any later name.
 * Everything else is the real library's.
 */
#include "real_library_table.h"

#include <stddef.h>
#include <string.h>

/* Where the table ends: the first entry this library "predates". */
#define SHIM_TABLE_END offsetof(kvzch_api_v1, register_global_stat_sink)

static bool shim_has_feature(const char *name) {
  static const char *const features[] = {"read_hit_rate_stats", "cumulative_read_stats",
                                         "stat_sink", "evict_older_than", "plugin_api_v1"};
  size_t i;
  for (i = 0; name != NULL && i < sizeof features / sizeof features[0]; ++i) {
    if (strcmp(name, features[i]) == 0) {
      return true;
    }
  }
  return false;
}

SHIM_EXPORT kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size);

kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size) {
  kvzch_status status = real_library_table(abi_major, table, table_size);

  if (status != KVZCH_STATUS_OK) {
    return status;
  }
  table->has_feature = shim_has_feature;
  table->cache_batch_remove = NULL;
  table->status_name = NULL;
  table->last_error_message = NULL;
  memset((unsigned char *)table + SHIM_TABLE_END, 0, table->struct_size - SHIM_TABLE_END);
  table->struct_size = (uint32_t)SHIM_TABLE_END;
  return KVZCH_STATUS_OK;
}
