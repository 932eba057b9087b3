/*
 * The generated header (include/kvzch.h) against the numbers of the contract,
 * docs/ABI.md: every constant's value, every public struct's size and field
 * offsets, every function's signature. All checks are compile-time (C11), so
 * a reordered field, a renumbered status or a changed parameter type in
 * src/ffi fails the build as soon as the header is regenerated. The offsets
 * are the LP64 layout the contract fixes (x86_64, aarch64).
 *
 * The 1.1 part applies once the header says KVZCH_ABI_MINOR 1: appended
 * fields must land exactly where ABI.md's "1.1 additions" put them, and
 * kvzch_options_init_sized's entry after cache_compact's. The 1.2 part
 * (KVZCH_ABI_MINOR 2, kvzch's own addition, documented in the README) puts
 * cache_reserve's entry after options_init_sized's, and the 1.3 part (also
 * kvzch's own) the two registrations with a release callback after that.
 *
 * The function names are parenthesized where they are declared, so that a
 * header which also defines a function-like macro of the same name (as 1.1
 * may for kvzch_options_init) declares the function, not the macro.
 */
#include "kvzch.h"

#include <stdio.h>

#define LAYOUT(cond) _Static_assert(cond, #cond)

LAYOUT(sizeof(void *) == 8);

/* --- constants --- */
LAYOUT(KVZCH_ABI_MAJOR == 1);
LAYOUT(KVZCH_ABI_MINOR >= 0);
LAYOUT(KVZCH_STATUS_OK == 0);
LAYOUT(KVZCH_STATUS_NULL_ARGUMENT == 1);
LAYOUT(KVZCH_STATUS_INVALID_ARGUMENT == 2);
LAYOUT(KVZCH_STATUS_OUT_OF_MEMORY == 3);
LAYOUT(KVZCH_STATUS_CAPACITY_EXCEEDED == 4);
LAYOUT(KVZCH_STATUS_NOT_FOUND == 5);
LAYOUT(KVZCH_STATUS_UNSUPPORTED == 6);
LAYOUT(KVZCH_STATUS_WOULD_DEADLOCK == 7);
LAYOUT(KVZCH_STATUS_INTERNAL == 8);
LAYOUT(sizeof(kvzch_status) == 4);
LAYOUT(KVZCH_MISS_ZERO_FILL == 0);
LAYOUT(KVZCH_MISS_LEAVE_UNTOUCHED == 1);
LAYOUT(KVZCH_STAT_READ_HIT_COUNT == 0);
LAYOUT(KVZCH_STAT_READ_MISS_COUNT == 1);
LAYOUT(KVZCH_STAT_READ_TOTAL_COUNT == 2);

/* --- kvzch_options --- */
LAYOUT(offsetof(kvzch_options, struct_size) == 0);
LAYOUT(offsetof(kvzch_options, row_bytes) == 4);
LAYOUT(offsetof(kvzch_options, num_shards) == 8);
LAYOUT(offsetof(kvzch_options, miss_policy) == 12);
LAYOUT(offsetof(kvzch_options, max_rows) == 16);
LAYOUT(offsetof(kvzch_options, max_memory_bytes) == 24);
LAYOUT(offsetof(kvzch_options, name) == 32);

/* --- kvzch_batch_stats --- */
LAYOUT(sizeof(kvzch_batch_stats) == 32);
LAYOUT(offsetof(kvzch_batch_stats, hits) == 0);
LAYOUT(offsetof(kvzch_batch_stats, misses) == 8);
LAYOUT(offsetof(kvzch_batch_stats, total) == 16);
LAYOUT(offsetof(kvzch_batch_stats, duration_ns) == 24);

/* --- kvzch_read_stats --- */
LAYOUT(sizeof(kvzch_read_stats) == 24);
LAYOUT(offsetof(kvzch_read_stats, hits) == 0);
LAYOUT(offsetof(kvzch_read_stats, misses) == 8);
LAYOUT(offsetof(kvzch_read_stats, total) == 16);

/* --- kvzch_cache_info --- */
LAYOUT(offsetof(kvzch_cache_info, struct_size) == 0);
LAYOUT(offsetof(kvzch_cache_info, row_bytes) == 4);
LAYOUT(offsetof(kvzch_cache_info, num_shards) == 8);
LAYOUT(offsetof(kvzch_cache_info, reserved) == 12);
LAYOUT(offsetof(kvzch_cache_info, rows) == 16);
LAYOUT(offsetof(kvzch_cache_info, memory_bytes) == 24);

/* --- kvzch_batch_event --- */
LAYOUT(sizeof(kvzch_batch_event) == 48);
LAYOUT(offsetof(kvzch_batch_event, struct_size) == 0);
LAYOUT(offsetof(kvzch_batch_event, reserved) == 4);
LAYOUT(offsetof(kvzch_batch_event, table) == 8);
LAYOUT(offsetof(kvzch_batch_event, stats) == 16);

/* --- kvzch_api_v1: two u32, then one pointer per entry in ABI.md's order --- */
#define ENTRY(member, index) LAYOUT(offsetof(kvzch_api_v1, member) == 8 + (index) * 8)
LAYOUT(offsetof(kvzch_api_v1, struct_size) == 0);
LAYOUT(offsetof(kvzch_api_v1, abi_version) == 4);
ENTRY(abi_version_fn, 0);
ENTRY(version, 1);
ENTRY(has_feature, 2);
ENTRY(status_name, 3);
ENTRY(last_error_message, 4);
ENTRY(stat_name, 5);
ENTRY(options_init, 6);
ENTRY(cache_create, 7);
ENTRY(cache_destroy, 8);
ENTRY(cache_batch_set, 9);
ENTRY(cache_batch_get, 10);
ENTRY(cache_batch_remove, 11);
ENTRY(cache_evict_older_than, 12);
ENTRY(cache_get_info, 13);
ENTRY(cache_get_read_hit_rate_stats, 14);
ENTRY(cache_get_cumulative_read_stats, 15);
ENTRY(cache_register_stat_sink, 16);
ENTRY(cache_unregister_stat_sink, 17);
ENTRY(register_global_stat_sink, 18);
ENTRY(unregister_global_stat_sink, 19);

#if KVZCH_ABI_MINOR == 0
LAYOUT(sizeof(kvzch_options) == 40);
LAYOUT(sizeof(kvzch_cache_info) == 32);
LAYOUT(sizeof(kvzch_api_v1) == 8 + 20 * 8);
#else
LAYOUT(offsetof(kvzch_options, eviction_policy) == 40);
LAYOUT(offsetof(kvzch_options, reserved1) == 44);
LAYOUT(KVZCH_EVICT_NONE == 0);
LAYOUT(KVZCH_EVICT_OLDEST_TIMESTAMP == 1);
LAYOUT(KVZCH_EVICT_LRU_APPROX == 2);
LAYOUT(offsetof(kvzch_cache_info, inserts) == 32);
LAYOUT(offsetof(kvzch_cache_info, updates) == 40);
LAYOUT(offsetof(kvzch_cache_info, removals) == 48);
LAYOUT(offsetof(kvzch_cache_info, expirations) == 56);
LAYOUT(offsetof(kvzch_cache_info, capacity_evictions) == 64);
ENTRY(cache_compact, 20);
ENTRY(options_init_sized, 21);
kvzch_status (kvzch_cache_compact)(kvzch_cache *cache);
kvzch_status (kvzch_options_init_sized)(kvzch_options *opts, size_t size);
#if KVZCH_ABI_MINOR == 1
LAYOUT(sizeof(kvzch_options) == 48);
LAYOUT(sizeof(kvzch_cache_info) == 72);
LAYOUT(sizeof(kvzch_api_v1) == 8 + 22 * 8);
#else
ENTRY(cache_reserve, 22);
kvzch_status (kvzch_cache_reserve)(kvzch_cache *cache, uint64_t additional_rows);
#if KVZCH_ABI_MINOR == 2
LAYOUT(sizeof(kvzch_options) == 48);
LAYOUT(sizeof(kvzch_cache_info) == 72);
LAYOUT(sizeof(kvzch_api_v1) == 8 + 23 * 8);
#else
ENTRY(cache_register_stat_sink_with_release, 23);
ENTRY(register_global_stat_sink_with_release, 24);
kvzch_status (kvzch_cache_register_stat_sink_with_release)(kvzch_cache *cache,
                                                           kvzch_stat_sink_fn fn,
                                                           void *user_data,
                                                           kvzch_sink_release_fn release,
                                                           uint64_t *out_id);
kvzch_status (kvzch_register_global_stat_sink_with_release)(kvzch_stat_sink_fn fn,
                                                            void *user_data,
                                                            kvzch_sink_release_fn release,
                                                            uint64_t *out_id);
#if KVZCH_ABI_MINOR == 3
LAYOUT(sizeof(kvzch_options) == 48);
LAYOUT(sizeof(kvzch_cache_info) == 72);
LAYOUT(sizeof(kvzch_api_v1) == 8 + 25 * 8);
#else
/* A new minor pins its additions' offsets and its sizes here first. */
#error "abi_layout_test.c has no layout for this KVZCH_ABI_MINOR: add its block"
#endif
#endif
#endif
#endif

/* --- functions: ABI.md's declarations again. A redeclaration with a type
 * incompatible with the header's is a compile error. --- */
uint32_t (kvzch_abi_version)(void);
const char *(kvzch_version)(void);
bool (kvzch_has_feature)(const char *name);
const char *(kvzch_status_name)(kvzch_status status);
size_t (kvzch_last_error_message)(char *buf, size_t len);
const char *(kvzch_stat_name)(uint32_t stat);
void (kvzch_options_init)(kvzch_options *opts);
kvzch_status (kvzch_cache_create)(const kvzch_options *opts, kvzch_cache **out);
void (kvzch_cache_destroy)(kvzch_cache *cache);
kvzch_status (kvzch_cache_batch_set)(kvzch_cache *cache, const int64_t *ids, size_t n,
                                     const void *rows, size_t rows_len, uint32_t timestamp);
kvzch_status (kvzch_cache_batch_get)(kvzch_cache *cache, const int64_t *ids, size_t n, void *out,
                                     size_t out_len, uint8_t *hit_mask, kvzch_batch_stats *stats);
kvzch_status (kvzch_cache_batch_remove)(kvzch_cache *cache, const int64_t *ids, size_t n,
                                        uint64_t *out_removed);
kvzch_status (kvzch_cache_evict_older_than)(kvzch_cache *cache, uint32_t threshold,
                                            uint64_t *out_evicted);
kvzch_status (kvzch_cache_get_info)(const kvzch_cache *cache, kvzch_cache_info *out);
kvzch_status (kvzch_cache_get_read_hit_rate_stats)(kvzch_cache *cache, kvzch_read_stats *out);
kvzch_status (kvzch_cache_get_cumulative_read_stats)(const kvzch_cache *cache,
                                                     kvzch_read_stats *out);
kvzch_status (kvzch_cache_register_stat_sink)(kvzch_cache *cache, kvzch_stat_sink_fn fn,
                                              void *user_data, uint64_t *out_id);
kvzch_status (kvzch_cache_unregister_stat_sink)(kvzch_cache *cache, uint64_t id);
kvzch_status (kvzch_register_global_stat_sink)(kvzch_stat_sink_fn fn, void *user_data,
                                               uint64_t *out_id);
kvzch_status (kvzch_unregister_global_stat_sink)(uint64_t id);
kvzch_status (kvzch_get_api)(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size);

/* The sink type and each table entry's type, through _Generic: a mismatch
 * selects `default` and fails the assertion. */
#define HAS_TYPE(expr, type) _Generic((expr), type: 1, default: 0)
LAYOUT(HAS_TYPE((kvzch_stat_sink_fn)0, void (*)(void *, const kvzch_batch_event *)));
#if KVZCH_ABI_MINOR >= 3
LAYOUT(HAS_TYPE((kvzch_sink_release_fn)0, void (*)(void *)));
#endif
/* Every field's type as ABI.md declares it: a field narrowed where the
 * alignment keeps every offset and size (a u64 made u32 before another u64,
 * or last in its struct) changes no number above. */
#define FIELD_TYPE(type_name, member, type) \
  LAYOUT(HAS_TYPE(((type_name *)0)->member, type))
FIELD_TYPE(kvzch_options, struct_size, uint32_t);
FIELD_TYPE(kvzch_options, row_bytes, uint32_t);
FIELD_TYPE(kvzch_options, num_shards, uint32_t);
FIELD_TYPE(kvzch_options, miss_policy, uint32_t);
FIELD_TYPE(kvzch_options, max_rows, uint64_t);
FIELD_TYPE(kvzch_options, max_memory_bytes, uint64_t);
FIELD_TYPE(kvzch_options, name, const char *);
FIELD_TYPE(kvzch_batch_stats, hits, uint64_t);
FIELD_TYPE(kvzch_batch_stats, misses, uint64_t);
FIELD_TYPE(kvzch_batch_stats, total, uint64_t);
FIELD_TYPE(kvzch_batch_stats, duration_ns, uint64_t);
FIELD_TYPE(kvzch_read_stats, hits, uint64_t);
FIELD_TYPE(kvzch_read_stats, misses, uint64_t);
FIELD_TYPE(kvzch_read_stats, total, uint64_t);
FIELD_TYPE(kvzch_cache_info, struct_size, uint32_t);
FIELD_TYPE(kvzch_cache_info, row_bytes, uint32_t);
FIELD_TYPE(kvzch_cache_info, num_shards, uint32_t);
FIELD_TYPE(kvzch_cache_info, reserved, uint32_t);
FIELD_TYPE(kvzch_cache_info, rows, uint64_t);
FIELD_TYPE(kvzch_cache_info, memory_bytes, uint64_t);
FIELD_TYPE(kvzch_batch_event, struct_size, uint32_t);
FIELD_TYPE(kvzch_batch_event, reserved, uint32_t);
FIELD_TYPE(kvzch_batch_event, table, const char *);
FIELD_TYPE(kvzch_batch_event, stats, kvzch_batch_stats);
FIELD_TYPE(kvzch_api_v1, struct_size, uint32_t);
FIELD_TYPE(kvzch_api_v1, abi_version, uint32_t);
#if KVZCH_ABI_MINOR >= 1
FIELD_TYPE(kvzch_options, eviction_policy, uint32_t);
FIELD_TYPE(kvzch_options, reserved1, uint32_t);
FIELD_TYPE(kvzch_cache_info, inserts, uint64_t);
FIELD_TYPE(kvzch_cache_info, updates, uint64_t);
FIELD_TYPE(kvzch_cache_info, removals, uint64_t);
FIELD_TYPE(kvzch_cache_info, expirations, uint64_t);
FIELD_TYPE(kvzch_cache_info, capacity_evictions, uint64_t);
#endif
#define ENTRY_TYPE(member, function) \
  LAYOUT(HAS_TYPE(((kvzch_api_v1 *)0)->member, __typeof__(&function)))
ENTRY_TYPE(abi_version_fn, kvzch_abi_version);
ENTRY_TYPE(version, kvzch_version);
ENTRY_TYPE(has_feature, kvzch_has_feature);
ENTRY_TYPE(status_name, kvzch_status_name);
ENTRY_TYPE(last_error_message, kvzch_last_error_message);
ENTRY_TYPE(stat_name, kvzch_stat_name);
ENTRY_TYPE(options_init, kvzch_options_init);
ENTRY_TYPE(cache_create, kvzch_cache_create);
ENTRY_TYPE(cache_destroy, kvzch_cache_destroy);
ENTRY_TYPE(cache_batch_set, kvzch_cache_batch_set);
ENTRY_TYPE(cache_batch_get, kvzch_cache_batch_get);
ENTRY_TYPE(cache_batch_remove, kvzch_cache_batch_remove);
ENTRY_TYPE(cache_evict_older_than, kvzch_cache_evict_older_than);
ENTRY_TYPE(cache_get_info, kvzch_cache_get_info);
ENTRY_TYPE(cache_get_read_hit_rate_stats, kvzch_cache_get_read_hit_rate_stats);
ENTRY_TYPE(cache_get_cumulative_read_stats, kvzch_cache_get_cumulative_read_stats);
ENTRY_TYPE(cache_register_stat_sink, kvzch_cache_register_stat_sink);
ENTRY_TYPE(cache_unregister_stat_sink, kvzch_cache_unregister_stat_sink);
ENTRY_TYPE(register_global_stat_sink, kvzch_register_global_stat_sink);
ENTRY_TYPE(unregister_global_stat_sink, kvzch_unregister_global_stat_sink);
#if KVZCH_ABI_MINOR >= 1
ENTRY_TYPE(cache_compact, kvzch_cache_compact);
ENTRY_TYPE(options_init_sized, kvzch_options_init_sized);
#endif
#if KVZCH_ABI_MINOR >= 2
ENTRY_TYPE(cache_reserve, kvzch_cache_reserve);
#endif
#if KVZCH_ABI_MINOR >= 3
ENTRY_TYPE(cache_register_stat_sink_with_release, kvzch_cache_register_stat_sink_with_release);
ENTRY_TYPE(register_global_stat_sink_with_release, kvzch_register_global_stat_sink_with_release);
#endif

/* The running library must agree with the header it is shipped with. */
int main(void) {
  kvzch_api_v1 api = {0};
  const uint32_t version = kvzch_abi_version();
  if (version != ((uint32_t)KVZCH_ABI_MAJOR << 16 | KVZCH_ABI_MINOR)) {
    fprintf(stderr, "library ABI %u.%u, header %d.%d\n", (unsigned)(version >> 16),
            (unsigned)(version & 0xFFFFu), KVZCH_ABI_MAJOR, KVZCH_ABI_MINOR);
    return 1;
  }
  if (kvzch_get_api(KVZCH_ABI_MAJOR, &api, sizeof api) != KVZCH_STATUS_OK ||
      api.struct_size != sizeof api) {
    fprintf(stderr, "the library's kvzch_api_v1 is not the header's (%u bytes, header %u)\n",
            (unsigned)api.struct_size, (unsigned)sizeof api);
    return 1;
  }
  return 0;
}
