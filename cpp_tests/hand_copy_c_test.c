/*
 * A C99 host compiled against the hand copy of ABI.md, not the generated
 * header, and linked to libkvzch: proves the contract alone is enough.
 */
#include "abi_hand_copy.h"

#include <stdio.h>
#include <string.h>

/* C99 has no _Static_assert: a negative array size fails the build instead.
 * The numbers are the LP64 layout the contract fixes (x86_64, aarch64). */
#define LAYOUT_ASSERT(name, cond) typedef char layout_assert_##name[(cond) ? 1 : -1]
LAYOUT_ASSERT(pointer_size, sizeof(void *) == 8);
LAYOUT_ASSERT(options_size, sizeof(kvzch_options) == 40);
LAYOUT_ASSERT(options_row_bytes, offsetof(kvzch_options, row_bytes) == 4);
LAYOUT_ASSERT(options_miss_policy, offsetof(kvzch_options, miss_policy) == 12);
LAYOUT_ASSERT(options_max_rows, offsetof(kvzch_options, max_rows) == 16);
LAYOUT_ASSERT(options_name, offsetof(kvzch_options, name) == 32);
LAYOUT_ASSERT(batch_stats_size, sizeof(kvzch_batch_stats) == 32);
LAYOUT_ASSERT(read_stats_size, sizeof(kvzch_read_stats) == 24);
LAYOUT_ASSERT(info_size, sizeof(kvzch_cache_info) == 32);
LAYOUT_ASSERT(info_rows, offsetof(kvzch_cache_info, rows) == 16);
LAYOUT_ASSERT(event_size, sizeof(kvzch_batch_event) == 48);
LAYOUT_ASSERT(event_table, offsetof(kvzch_batch_event, table) == 8);
LAYOUT_ASSERT(event_stats, offsetof(kvzch_batch_event, stats) == 16);
LAYOUT_ASSERT(api_size, sizeof(kvzch_api_v1) == 8 + 20 * 8);
LAYOUT_ASSERT(api_first_fn, offsetof(kvzch_api_v1, abi_version_fn) == 8);
LAYOUT_ASSERT(api_last_fn, offsetof(kvzch_api_v1, unregister_global_stat_sink) == 8 + 19 * 8);

static int failures = 0;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

struct sink_log {
  int calls;
  uint64_t hits;
  uint64_t misses;
  uint32_t event_struct_size;
  char table[32];
};

static void log_sink(void *user_data, const kvzch_batch_event *event) {
  struct sink_log *log = (struct sink_log *)user_data;
  ++log->calls;
  log->hits = event->stats.hits;
  log->misses = event->stats.misses;
  log->event_struct_size = event->struct_size;
  strncpy(log->table, event->table, sizeof log->table - 1);
}

/* What the running library says its structs are, against this copy. A newer
 * minor may only have grown them. */
static void check_library_layout(void) {
  union {
    kvzch_options opts;
    unsigned char room[512];
  } padded;
  struct {
    kvzch_api_v1 api;
    void (*future[32])(void);
  } bigger;
  const uint32_t minor = kvzch_abi_version() & 0xFFFFu;

  memset(&padded, 0, sizeof padded);
  kvzch_options_init(&padded.opts);
  CHECK(padded.opts.struct_size >= sizeof(kvzch_options));
  CHECK(minor > 0 || padded.opts.struct_size == sizeof(kvzch_options));

  memset(&bigger, 0, sizeof bigger);
  CHECK(kvzch_get_api(1, &bigger.api, sizeof bigger) == KVZCH_STATUS_OK);
  CHECK(bigger.api.struct_size >= sizeof(kvzch_api_v1));
  CHECK(minor > 0 || bigger.api.struct_size == sizeof(kvzch_api_v1));
}

int main(void) {
  kvzch_options opts;
  kvzch_cache *cache = NULL;
  struct sink_log cache_log;
  struct sink_log global_log;
  uint64_t cache_sink = 0;
  uint64_t global_sink = 0;
  const int64_t ids[3] = {-1, 10, 11};
  unsigned char rows[3 * 5];
  const int64_t query[4] = {11, 12, -1, 11};
  unsigned char out[4 * 5];
  uint8_t mask[4];
  kvzch_batch_stats stats;
  kvzch_read_stats window;
  kvzch_read_stats total;
  kvzch_cache_info info;
  size_t i;

  CHECK(kvzch_abi_version() >> 16 == KVZCH_ABI_MAJOR);
  CHECK(kvzch_has_feature("stat_sink"));
  CHECK(strcmp(kvzch_status_name(KVZCH_STATUS_INVALID_ARGUMENT), "INVALID_ARGUMENT") == 0);
  check_library_layout();

  kvzch_options_init(&opts);
  opts.row_bytes = 5;
  opts.miss_policy = KVZCH_MISS_LEAVE_UNTOUCHED;
  opts.name = "hand_copy_c";
  CHECK(kvzch_cache_create(&opts, &cache) == KVZCH_STATUS_OK);
  if (cache == NULL) {
    fprintf(stderr, "kvzch_cache_create failed\n");
    return 1;
  }

  memset(&cache_log, 0, sizeof cache_log);
  memset(&global_log, 0, sizeof global_log);
  CHECK(kvzch_cache_register_stat_sink(cache, log_sink, &cache_log, &cache_sink) == KVZCH_STATUS_OK);
  CHECK(kvzch_register_global_stat_sink(log_sink, &global_log, &global_sink) == KVZCH_STATUS_OK);

  for (i = 0; i < sizeof rows; ++i) rows[i] = (unsigned char)(100 + i);
  CHECK(kvzch_cache_batch_set(cache, ids, 3, rows, sizeof rows, 7) == KVZCH_STATUS_OK);

  memset(out, 0xEE, sizeof out);
  CHECK(kvzch_cache_batch_get(cache, query, 4, out, sizeof out, mask, &stats) == KVZCH_STATUS_OK);
  CHECK(memcmp(out, rows + 10, 5) == 0);
  CHECK(out[5] == 0xEE && out[9] == 0xEE); /* leave-untouched miss */
  CHECK(memcmp(out + 10, rows, 5) == 0);
  CHECK(memcmp(out + 15, rows + 10, 5) == 0);
  CHECK(mask[0] == 1 && mask[1] == 0 && mask[2] == 1 && mask[3] == 1);
  CHECK(stats.hits == 3 && stats.misses == 1 && stats.total == 4);

  CHECK(cache_log.calls == 1 && cache_log.hits == 3 && cache_log.misses == 1);
  CHECK(strcmp(cache_log.table, "hand_copy_c") == 0);
  CHECK(cache_log.event_struct_size >= sizeof(kvzch_batch_event));
  CHECK(global_log.calls == 1 && strcmp(global_log.table, "hand_copy_c") == 0);

  CHECK(kvzch_cache_get_read_hit_rate_stats(cache, &window) == KVZCH_STATUS_OK);
  CHECK(window.hits == 3 && window.misses == 1 && window.total == 4);
  CHECK(kvzch_cache_get_read_hit_rate_stats(cache, &window) == KVZCH_STATUS_OK);
  CHECK(window.total == 0);
  CHECK(kvzch_cache_get_cumulative_read_stats(cache, &total) == KVZCH_STATUS_OK);
  CHECK(total.hits == 3 && total.total == 4);

  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(kvzch_cache_get_info(cache, &info) == KVZCH_STATUS_OK);
  CHECK(info.rows == 3 && info.row_bytes == 5);

  CHECK(kvzch_cache_unregister_stat_sink(cache, cache_sink) == KVZCH_STATUS_OK);
  CHECK(kvzch_unregister_global_stat_sink(global_sink) == KVZCH_STATUS_OK);
  CHECK(kvzch_cache_batch_get(cache, query, 1, out, 5, NULL, NULL) == KVZCH_STATUS_OK);
  CHECK(cache_log.calls == 1 && global_log.calls == 1);

  CHECK(kvzch_cache_batch_get(cache, query, 4, out, 19, NULL, NULL) == KVZCH_STATUS_INVALID_ARGUMENT);
  CHECK(kvzch_last_error_message(NULL, 0) > 0);

  kvzch_cache_destroy(cache);
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("hand copy C host: all checks passed\n");
  return 0;
}
