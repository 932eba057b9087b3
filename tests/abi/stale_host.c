/*
 * A predictor binary compiled against ABI 1.0 (the frozen kvzch_1_0.h) and
 * never rebuilt, run against today's library. Built twice:
 *   - linked: the 1.0 names are resolved by the dynamic linker at load time;
 *   - STALE_HOST_DLOPEN: not linked; the library at KVZCH_LIBRARY_PATH is
 *     dlopen'd and reached through kvzch_get_api, as plugin hosts do.
 * Every 1.0 function is called and its 1.0 semantics checked, so a library
 * change that breaks deployed hosts fails here. C99, like the oldest hosts.
 */
#include "kvzch_1_0.h"

#include <stdio.h>
#include <string.h>

#ifdef STALE_HOST_DLOPEN
#include <dlfcn.h>
#endif

static int failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

typedef kvzch_status (*get_api_fn)(uint32_t, kvzch_api_v1 *, size_t);

/* Bytes the library must leave alone after each struct this host passes:
 * a newer library knows longer structs, and writing its own size into this
 * host's would overrun the host's memory. */
#define CANARY 0xA5
#define CANARY_BYTES 64

static int untouched(const unsigned char *bytes, size_t from, size_t to) {
  size_t i;
  for (i = from; i < to; ++i) {
    if (bytes[i] != CANARY) return 0;
  }
  return 1;
}

/* Every entry of the 1.0 table and the name it stands for. */
static const struct {
  const char *name;
  size_t offset;
} entries_1_0[] = {
    {"kvzch_abi_version", offsetof(kvzch_api_v1, abi_version_fn)},
    {"kvzch_version", offsetof(kvzch_api_v1, version)},
    {"kvzch_has_feature", offsetof(kvzch_api_v1, has_feature)},
    {"kvzch_status_name", offsetof(kvzch_api_v1, status_name)},
    {"kvzch_last_error_message", offsetof(kvzch_api_v1, last_error_message)},
    {"kvzch_stat_name", offsetof(kvzch_api_v1, stat_name)},
    {"kvzch_options_init", offsetof(kvzch_api_v1, options_init)},
    {"kvzch_cache_create", offsetof(kvzch_api_v1, cache_create)},
    {"kvzch_cache_destroy", offsetof(kvzch_api_v1, cache_destroy)},
    {"kvzch_cache_batch_set", offsetof(kvzch_api_v1, cache_batch_set)},
    {"kvzch_cache_batch_get", offsetof(kvzch_api_v1, cache_batch_get)},
    {"kvzch_cache_batch_remove", offsetof(kvzch_api_v1, cache_batch_remove)},
    {"kvzch_cache_evict_older_than", offsetof(kvzch_api_v1, cache_evict_older_than)},
    {"kvzch_cache_get_info", offsetof(kvzch_api_v1, cache_get_info)},
    {"kvzch_cache_get_read_hit_rate_stats", offsetof(kvzch_api_v1, cache_get_read_hit_rate_stats)},
    {"kvzch_cache_get_cumulative_read_stats",
     offsetof(kvzch_api_v1, cache_get_cumulative_read_stats)},
    {"kvzch_cache_register_stat_sink", offsetof(kvzch_api_v1, cache_register_stat_sink)},
    {"kvzch_cache_unregister_stat_sink", offsetof(kvzch_api_v1, cache_unregister_stat_sink)},
    {"kvzch_register_global_stat_sink", offsetof(kvzch_api_v1, register_global_stat_sink)},
    {"kvzch_unregister_global_stat_sink", offsetof(kvzch_api_v1, unregister_global_stat_sink)},
};
#define ENTRY_COUNT (sizeof entries_1_0 / sizeof entries_1_0[0])

/* The entry as an object pointer: POSIX makes them the same size, and dlsym
 * answers in that form. */
static void *entry_at(const kvzch_api_v1 *api, size_t offset) {
  void *entry;
  memcpy(&entry, (const unsigned char *)api + offset, sizeof entry);
  return entry;
}

/* kvzch_get_api from the 1.0 side: a 1.0 table, a 1.0 size. */
static void check_get_api(get_api_fn get_api) {
  union {
    kvzch_api_v1 api;
    unsigned char bytes[sizeof(kvzch_api_v1) + CANARY_BYTES];
  } table;
  size_t i;

  memset(&table, CANARY, sizeof table);
  CHECK(get_api(2, &table.api, sizeof table.api) == KVZCH_STATUS_UNSUPPORTED);
  CHECK(untouched(table.bytes, 0, sizeof table.bytes));
  CHECK(get_api(1, &table.api, sizeof table.api - sizeof(void *)) == KVZCH_STATUS_INVALID_ARGUMENT);
  CHECK(get_api(1, NULL, sizeof table.api) == KVZCH_STATUS_NULL_ARGUMENT);

  CHECK(get_api(KVZCH_ABI_MAJOR, &table.api, sizeof table.api) == KVZCH_STATUS_OK);
  CHECK(table.api.struct_size == sizeof(kvzch_api_v1));
  CHECK(table.api.abi_version >> 16 == KVZCH_ABI_MAJOR);
  CHECK(untouched(table.bytes, sizeof table.api, sizeof table.bytes));
  for (i = 0; i < ENTRY_COUNT; ++i) {
    if (entry_at(&table.api, entries_1_0[i].offset) == NULL) {
      fprintf(stderr, "kvzch_get_api left the 1.0 entry of %s NULL\n", entries_1_0[i].name);
      ++failures;
    }
  }
}

static void check_version_and_names(const kvzch_api_v1 *k) {
  static const char *const features_1_0[] = {
      "read_hit_rate_stats", "cumulative_read_stats", "stat_sink", "global_stat_sink",
      "evict_older_than",    "batch_remove",          "plugin_api_v1"};
  static const char *const statuses_1_0[] = {
      "OK",        "NULL_ARGUMENT", "INVALID_ARGUMENT", "OUT_OF_MEMORY", "CAPACITY_EXCEEDED",
      "NOT_FOUND", "UNSUPPORTED",   "WOULD_DEADLOCK",   "INTERNAL"};
  const char *version = k->version();
  size_t i;

  CHECK(k->abi_version_fn() >> 16 == KVZCH_ABI_MAJOR);
  CHECK(k->abi_version_fn() == k->abi_version);
  CHECK(version != NULL && version[0] >= '0' && version[0] <= '9');

  for (i = 0; i < sizeof features_1_0 / sizeof features_1_0[0]; ++i) {
    if (!k->has_feature(features_1_0[i])) {
      fprintf(stderr, "the 1.0 feature \"%s\" is gone\n", features_1_0[i]);
      ++failures;
    }
  }
  CHECK(!k->has_feature(NULL));
  CHECK(!k->has_feature(""));
  CHECK(!k->has_feature("stat_sink_"));

  for (i = 0; i < sizeof statuses_1_0 / sizeof statuses_1_0[0]; ++i) {
    CHECK(strcmp(k->status_name((kvzch_status)i), statuses_1_0[i]) == 0);
  }
  CHECK(strcmp(k->status_name((kvzch_status)9), "UNKNOWN") == 0);

  CHECK(strcmp(k->stat_name(KVZCH_STAT_READ_HIT_COUNT), "kvzch.inference.read_hit_count") == 0);
  CHECK(strcmp(k->stat_name(KVZCH_STAT_READ_MISS_COUNT), "kvzch.inference.read_miss_count") == 0);
  CHECK(strcmp(k->stat_name(KVZCH_STAT_READ_TOTAL_COUNT), "kvzch.inference.read_total_count") == 0);
  CHECK(k->stat_name(3) == NULL);
}

/* The 1.0 struct_size handshakes: the library writes at most what this host
 * compiled, and says so. */
static void check_options_init(const kvzch_api_v1 *k) {
  union {
    kvzch_options opts;
    unsigned char bytes[sizeof(kvzch_options) + CANARY_BYTES];
  } padded;

  memset(&padded, CANARY, sizeof padded);
  k->options_init(&padded.opts);
  CHECK(padded.opts.struct_size == sizeof(kvzch_options));
  CHECK(padded.opts.row_bytes == 0 && padded.opts.num_shards == 0);
  CHECK(padded.opts.miss_policy == KVZCH_MISS_ZERO_FILL);
  CHECK(padded.opts.max_rows == 0 && padded.opts.max_memory_bytes == 0);
  CHECK(padded.opts.name == NULL);
  if (!untouched(padded.bytes, sizeof padded.opts, sizeof padded.bytes)) {
    fprintf(stderr, "kvzch_options_init wrote past the 1.0 kvzch_options (docs/ABI_POLICY.md)\n");
    ++failures;
  }
  k->options_init(NULL);
}

static kvzch_cache *create(const kvzch_api_v1 *k, uint32_t row_bytes, uint32_t miss_policy,
                           uint64_t max_rows, const char *name) {
  kvzch_options opts;
  kvzch_cache *cache = NULL;
  k->options_init(&opts);
  opts.row_bytes = row_bytes;
  opts.miss_policy = miss_policy;
  opts.max_rows = max_rows;
  opts.name = name;
  CHECK(k->cache_create(&opts, &cache) == KVZCH_STATUS_OK);
  return cache;
}

static void check_create_errors(const kvzch_api_v1 *k) {
  kvzch_options opts;
  kvzch_cache *const sentinel = (kvzch_cache *)&opts;
  kvzch_cache *cache = sentinel;
  char message[256];
  char tiny[4];
  size_t full;

  k->options_init(&opts);
  CHECK(k->cache_create(&opts, &cache) == KVZCH_STATUS_INVALID_ARGUMENT);
  CHECK(cache == sentinel);
  full = k->last_error_message(message, sizeof message);
  CHECK(full > 0 && full < sizeof message && strlen(message) == full);
  CHECK(strstr(message, "row_bytes") != NULL);
  CHECK(k->last_error_message(NULL, 0) == full);
  CHECK(k->last_error_message(tiny, sizeof tiny) == full);
  CHECK(strlen(tiny) == sizeof tiny - 1 && strncmp(tiny, message, sizeof tiny - 1) == 0);

  opts.row_bytes = 8;
  opts.name = "not a name";
  CHECK(k->cache_create(&opts, &cache) == KVZCH_STATUS_INVALID_ARGUMENT);
  opts.name = NULL;
  opts.miss_policy = 2;
  CHECK(k->cache_create(&opts, &cache) == KVZCH_STATUS_INVALID_ARGUMENT);
  CHECK(k->cache_create(NULL, &cache) == KVZCH_STATUS_NULL_ARGUMENT);
  CHECK(cache == sentinel);

  /* A 1.0 host's options end at `name`: whatever a later minor appended
   * (an eviction policy, say) takes its default, and the default keeps the
   * 1.0 behaviour of refusing a publish that does not fit. */
  cache = create(k, 4, KVZCH_MISS_ZERO_FILL, 2, NULL);
  if (cache != NULL) {
    const int64_t ids[3] = {1, 2, 3};
    const unsigned char rows[12] = {0};
    kvzch_cache_info info;
    CHECK(k->cache_batch_set(cache, ids, 3, rows, sizeof rows, 1) == KVZCH_STATUS_CAPACITY_EXCEEDED);
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(k->cache_get_info(cache, &info) == KVZCH_STATUS_OK && info.rows == 0);
    k->cache_destroy(cache);
  }
  k->cache_destroy(NULL);
}

struct sink_log {
  int calls;
  uint32_t event_struct_size;
  uint64_t hits;
  uint64_t misses;
  uint64_t total;
  char table[65];
};

static void log_sink(void *user_data, const kvzch_batch_event *event) {
  struct sink_log *log = (struct sink_log *)user_data;
  ++log->calls;
  log->event_struct_size = event->struct_size;
  log->hits = event->stats.hits;
  log->misses = event->stats.misses;
  log->total = event->stats.total;
  strncpy(log->table, event->table, sizeof log->table - 1);
}

static void check_data_path(const kvzch_api_v1 *k) {
  enum { ROW = 6 };
  const int64_t ids[3] = {-7, 0, 9000000000LL};
  unsigned char rows[3 * ROW];
  const int64_t query[4] = {9000000000LL, 5, -7, -7};
  unsigned char out[4 * ROW];
  uint8_t mask[4];
  kvzch_batch_stats stats;
  kvzch_read_stats window;
  kvzch_read_stats cumulative;
  union {
    kvzch_cache_info info;
    unsigned char bytes[sizeof(kvzch_cache_info) + CANARY_BYTES];
  } padded;
  struct sink_log cache_log;
  struct sink_log global_log;
  uint64_t cache_sink = 0;
  uint64_t global_sink = 0;
  uint64_t count = 0;
  kvzch_cache *cache = create(k, ROW, KVZCH_MISS_ZERO_FILL, 0, "stale_host");
  kvzch_cache *other = create(k, ROW, KVZCH_MISS_LEAVE_UNTOUCHED, 0, NULL);
  size_t i;

  if (cache == NULL || other == NULL) {
    fprintf(stderr, "kvzch_cache_create failed; skipping the data path\n");
    ++failures;
    return;
  }
  memset(&cache_log, 0, sizeof cache_log);
  memset(&global_log, 0, sizeof global_log);
  CHECK(k->cache_register_stat_sink(cache, log_sink, &cache_log, &cache_sink) == KVZCH_STATUS_OK);
  CHECK(k->register_global_stat_sink(log_sink, &global_log, &global_sink) == KVZCH_STATUS_OK);
  CHECK(k->cache_register_stat_sink(cache, NULL, &cache_log, &count) == KVZCH_STATUS_NULL_ARGUMENT);

  for (i = 0; i < sizeof rows; ++i) rows[i] = (unsigned char)(i + 1);
  CHECK(k->cache_batch_set(cache, ids, 3, rows, sizeof rows - 1, 10) == KVZCH_STATUS_INVALID_ARGUMENT);
  CHECK(k->cache_batch_set(cache, ids, 3, rows, sizeof rows, 10) == KVZCH_STATUS_OK);
  CHECK(k->cache_batch_set(cache, NULL, 0, NULL, 0, 10) == KVZCH_STATUS_OK);

  memset(out, 0xEE, sizeof out);
  CHECK(k->cache_batch_get(cache, query, 4, out, sizeof out, mask, &stats) == KVZCH_STATUS_OK);
  CHECK(memcmp(out, rows + 2 * ROW, ROW) == 0);
  CHECK(out[ROW] == 0 && out[2 * ROW - 1] == 0); /* zero-filled miss */
  CHECK(memcmp(out + 2 * ROW, rows, ROW) == 0 && memcmp(out + 3 * ROW, rows, ROW) == 0);
  CHECK(mask[0] == 1 && mask[1] == 0 && mask[2] == 1 && mask[3] == 1);
  CHECK(stats.hits == 3 && stats.misses == 1 && stats.total == 4);
  CHECK(k->cache_batch_get(cache, query, 4, out, sizeof out - 1, NULL, NULL) ==
        KVZCH_STATUS_INVALID_ARGUMENT);

  CHECK(cache_log.calls == 1 && cache_log.hits == 3 && cache_log.misses == 1);
  CHECK(cache_log.total == 4 && strcmp(cache_log.table, "stale_host") == 0);
  CHECK(cache_log.event_struct_size >= sizeof(kvzch_batch_event));

  memset(out, 0xEE, sizeof out);
  CHECK(k->cache_batch_get(other, query, 1, out, ROW, NULL, NULL) == KVZCH_STATUS_OK);
  CHECK(out[0] == 0xEE && out[ROW - 1] == 0xEE); /* leave-untouched miss */
  CHECK(global_log.calls == 2 && strcmp(global_log.table, "default") == 0);
  CHECK(global_log.misses == 1 && cache_log.calls == 1);

  CHECK(k->cache_get_read_hit_rate_stats(cache, &window) == KVZCH_STATUS_OK);
  CHECK(window.hits == 3 && window.misses == 1 && window.total == 4);
  CHECK(k->cache_get_read_hit_rate_stats(cache, &window) == KVZCH_STATUS_OK);
  CHECK(window.hits == 0 && window.total == 0);
  CHECK(k->cache_get_cumulative_read_stats(cache, &cumulative) == KVZCH_STATUS_OK);
  CHECK(cumulative.hits == 3 && cumulative.misses == 1 && cumulative.total == 4);
  CHECK(k->cache_get_cumulative_read_stats(cache, NULL) == KVZCH_STATUS_NULL_ARGUMENT);

  memset(&padded, CANARY, sizeof padded);
  padded.info.struct_size = sizeof padded.info;
  CHECK(k->cache_get_info(cache, &padded.info) == KVZCH_STATUS_OK);
  CHECK(padded.info.struct_size == sizeof(kvzch_cache_info));
  CHECK(padded.info.row_bytes == ROW && padded.info.rows == 3);
  CHECK(padded.info.num_shards > 0 && (padded.info.num_shards & (padded.info.num_shards - 1)) == 0);
  CHECK(padded.info.memory_bytes >= 3 * ROW);
  if (!untouched(padded.bytes, sizeof padded.info, sizeof padded.bytes)) {
    fprintf(stderr, "kvzch_cache_get_info wrote past the 1.0 kvzch_cache_info\n");
    ++failures;
  }
  padded.info.struct_size = sizeof padded.info - 1;
  CHECK(k->cache_get_info(cache, &padded.info) == KVZCH_STATUS_INVALID_ARGUMENT);

  CHECK(k->cache_batch_remove(cache, ids, 2, &count) == KVZCH_STATUS_OK && count == 2);
  CHECK(k->cache_batch_remove(cache, ids, 2, NULL) == KVZCH_STATUS_OK);
  CHECK(k->cache_batch_set(cache, ids, 1, rows, ROW, 20) == KVZCH_STATUS_OK);
  CHECK(k->cache_evict_older_than(cache, 20, &count) == KVZCH_STATUS_OK && count == 1);
  CHECK(k->cache_evict_older_than(cache, 20, NULL) == KVZCH_STATUS_OK);
  memset(&padded, 0, sizeof padded);
  padded.info.struct_size = sizeof padded.info;
  CHECK(k->cache_get_info(cache, &padded.info) == KVZCH_STATUS_OK && padded.info.rows == 1);

  CHECK(k->cache_unregister_stat_sink(cache, cache_sink) == KVZCH_STATUS_OK);
  CHECK(k->cache_unregister_stat_sink(cache, cache_sink) == KVZCH_STATUS_NOT_FOUND);
  CHECK(k->unregister_global_stat_sink(global_sink) == KVZCH_STATUS_OK);
  CHECK(k->unregister_global_stat_sink(global_sink) == KVZCH_STATUS_NOT_FOUND);
  CHECK(k->cache_batch_get(cache, query, 1, out, ROW, NULL, NULL) == KVZCH_STATUS_OK);
  CHECK(cache_log.calls == 1 && global_log.calls == 2);

  k->cache_destroy(other);
  k->cache_destroy(cache);
}

#ifdef STALE_HOST_DLOPEN
/* A plugin host resolves kvzch_get_api alone and fills `table` with it; the
 * other names must resolve too, to the very functions the table hands out. */
static get_api_fn load(void **handle, kvzch_api_v1 *table) {
  void *symbol;
  get_api_fn get_api;
  size_t i;

  *handle = dlopen(KVZCH_LIBRARY_PATH, RTLD_NOW | RTLD_LOCAL);
  if (*handle == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return NULL;
  }
  symbol = dlsym(*handle, "kvzch_get_api");
  if (symbol == NULL) {
    fprintf(stderr, "dlsym(kvzch_get_api): %s\n", dlerror());
    return NULL;
  }
  memcpy(&get_api, &symbol, sizeof get_api);
  memset(table, 0, sizeof *table);
  CHECK(get_api(1, table, sizeof *table) == KVZCH_STATUS_OK);
  for (i = 0; i < ENTRY_COUNT; ++i) {
    void *by_name = dlsym(*handle, entries_1_0[i].name);
    if (by_name == NULL || by_name != entry_at(table, entries_1_0[i].offset)) {
      fprintf(stderr, "dlsym(%s) is not the table's entry\n", entries_1_0[i].name);
      ++failures;
    }
  }
  return get_api;
}
#else
/* Linked: each 1.0 name, resolved by the dynamic linker. */
static kvzch_api_v1 by_name(void) {
  kvzch_api_v1 k;
  memset(&k, 0, sizeof k);
  k.struct_size = sizeof k;
  k.abi_version = kvzch_abi_version();
  k.abi_version_fn = kvzch_abi_version;
  k.version = kvzch_version;
  k.has_feature = kvzch_has_feature;
  k.status_name = kvzch_status_name;
  k.last_error_message = kvzch_last_error_message;
  k.stat_name = kvzch_stat_name;
  k.options_init = kvzch_options_init;
  k.cache_create = kvzch_cache_create;
  k.cache_destroy = kvzch_cache_destroy;
  k.cache_batch_set = kvzch_cache_batch_set;
  k.cache_batch_get = kvzch_cache_batch_get;
  k.cache_batch_remove = kvzch_cache_batch_remove;
  k.cache_evict_older_than = kvzch_cache_evict_older_than;
  k.cache_get_info = kvzch_cache_get_info;
  k.cache_get_read_hit_rate_stats = kvzch_cache_get_read_hit_rate_stats;
  k.cache_get_cumulative_read_stats = kvzch_cache_get_cumulative_read_stats;
  k.cache_register_stat_sink = kvzch_cache_register_stat_sink;
  k.cache_unregister_stat_sink = kvzch_cache_unregister_stat_sink;
  k.register_global_stat_sink = kvzch_register_global_stat_sink;
  k.unregister_global_stat_sink = kvzch_unregister_global_stat_sink;
  return k;
}
#endif

int main(void) {
  kvzch_api_v1 k;
#ifdef STALE_HOST_DLOPEN
  void *handle = NULL;
  const get_api_fn get_api = load(&handle, &k);
  if (get_api == NULL) return 1;
  check_get_api(get_api);
#else
  k = by_name();
  check_get_api(kvzch_get_api);
#endif
  printf("stale 1.0 host on libkvzch %s, ABI %u.%u\n", k.version(),
         (unsigned)(k.abi_version >> 16), (unsigned)(k.abi_version & 0xFFFFu));
  check_version_and_names(&k);
  check_options_init(&k);
  check_create_errors(&k);
  check_data_path(&k);
#ifdef STALE_HOST_DLOPEN
  dlclose(handle);
#endif
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
