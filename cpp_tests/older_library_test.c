/*
 * The other direction from tests/abi/stale_host.c: a C host compiled against
 * the current header, deployed next to an older library whose plugin table
 * lacks entries this host knows (older_library_shim.c plays that library).
 * The host checks each optional entry before calling it and takes a fallback
 * when it is missing; it must reach the same results as with the real
 * library, by the other path, and never call a missing entry.
 */
#include "kvzch.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

typedef kvzch_status (*get_api_fn)(uint32_t, kvzch_api_v1 *, size_t);

/* The host-side rule of the ABI: an entry is there when the library's table
 * reaches it and it is not NULL. */
#define PRESENT(api, member)                                                         \
  (offsetof(kvzch_api_v1, member) + sizeof((api)->member) <= (api)->struct_size && \
   (api)->member != NULL)

/* What the host did and saw. */
struct outcome {
  int sized_init;              /* else: the 1.0 kvzch_options_init */
  int removed_by_batch_remove; /* else: republished and evicted the rest */
  int compacted;               /* else: skipped */
  int global_sink;             /* else: a sink on the cache */
  int error_message;           /* the library explained the failed call */
  int sink_calls;
  kvzch_batch_stats stats;
  uint64_t rows;
};

static void count_sink(void *user_data, const kvzch_batch_event *event) {
  struct outcome *outcome = (struct outcome *)user_data;
  ++outcome->sink_calls;
  outcome->stats = event->stats;
}

/* Publishes ids 1..3, retires id 2, serves one lookup with its stats routed to
 * a sink, reports a failed call, and compacts. */
static int serve(const kvzch_api_v1 *k, struct outcome *outcome) {
  enum { ROW = 4 };
  const int64_t ids[3] = {1, 2, 3};
  const int64_t kept[2] = {1, 3};
  unsigned char rows[3 * ROW];
  unsigned char out[3 * ROW];
  kvzch_options opts;
  kvzch_cache *cache = NULL;
  kvzch_cache_info info;
  uint64_t sink = 0;
  char message[256];

  memset(outcome, 0, sizeof *outcome);
  if (!PRESENT(k, options_init) || !PRESENT(k, cache_create) || !PRESENT(k, cache_destroy) ||
      !PRESENT(k, cache_batch_set) || !PRESENT(k, cache_batch_get) || !PRESENT(k, cache_get_info)) {
    fprintf(stderr, "the library lacks what this host cannot do without\n");
    return 0;
  }
  outcome->sized_init = PRESENT(k, options_init_sized);
  if (outcome->sized_init) {
    CHECK(k->options_init_sized(&opts, sizeof opts) == KVZCH_STATUS_OK);
  } else {
    /* It writes the 1.0 fields and says so in struct_size: the library
     * never reads the fields this host has beyond them. */
    k->options_init(&opts);
  }
  opts.row_bytes = ROW;
  if (k->cache_create(&opts, &cache) != KVZCH_STATUS_OK) return 0;

  outcome->global_sink = PRESENT(k, register_global_stat_sink) &&
                         PRESENT(k, unregister_global_stat_sink) &&
                         k->has_feature("global_stat_sink");
  if (outcome->global_sink) {
    CHECK(k->register_global_stat_sink(count_sink, outcome, &sink) == KVZCH_STATUS_OK);
  } else {
    CHECK(k->cache_register_stat_sink(cache, count_sink, outcome, &sink) == KVZCH_STATUS_OK);
  }

  memset(rows, 7, sizeof rows);
  CHECK(k->cache_batch_set(cache, ids, 3, rows, sizeof rows, 10) == KVZCH_STATUS_OK);
  outcome->removed_by_batch_remove = PRESENT(k, cache_batch_remove) && k->has_feature("batch_remove");
  if (outcome->removed_by_batch_remove) {
    CHECK(k->cache_batch_remove(cache, ids + 1, 1, NULL) == KVZCH_STATUS_OK);
  } else {
    /* The upstream way: republish what stays, then evict what is older. */
    CHECK(k->cache_batch_set(cache, kept, 2, rows, 2 * ROW, 11) == KVZCH_STATUS_OK);
    CHECK(k->cache_evict_older_than(cache, 11, NULL) == KVZCH_STATUS_OK);
  }

  CHECK(k->cache_batch_get(cache, ids, 3, out, sizeof out, NULL, NULL) == KVZCH_STATUS_OK);
  /* Either path leaves ids 1 and 3 with their rows of 7s and id 2 a miss,
   * which the default miss policy fills with zeros. */
  {
    size_t first_wrong = sizeof out;
    for (size_t i = sizeof out; i-- > 0;) {
      if (out[i] != (i / ROW == 1 ? 0 : 7)) first_wrong = i;
    }
    CHECK(first_wrong == sizeof out);
  }

  if (k->cache_batch_get(cache, ids, 3, out, sizeof out - 1, NULL, NULL) ==
      KVZCH_STATUS_INVALID_ARGUMENT) {
    outcome->error_message = PRESENT(k, last_error_message) &&
                             k->last_error_message(message, sizeof message) > 0 &&
                             strstr(message, "out_len") != NULL;
    fprintf(stderr, "  a short buffer, as expected: %s: %s\n",
            PRESENT(k, status_name) ? k->status_name(KVZCH_STATUS_INVALID_ARGUMENT)
                                    : "status 2",
            outcome->error_message ? message : "(this library keeps no message)");
  } else {
    fprintf(stderr, "  a short buffer was accepted\n");
    ++failures;
  }

  if (outcome->global_sink) {
    CHECK(k->unregister_global_stat_sink(sink) == KVZCH_STATUS_OK);
  } else {
    CHECK(k->cache_unregister_stat_sink(cache, sink) == KVZCH_STATUS_OK);
  }
  outcome->compacted = PRESENT(k, cache_compact) && k->has_feature("compact");
  if (outcome->compacted) {
    CHECK(k->cache_compact(cache) == KVZCH_STATUS_OK);
  }
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(k->cache_get_info(cache, &info) == KVZCH_STATUS_OK);
  outcome->rows = info.rows;
  k->cache_destroy(cache);
  return 1;
}

static int load(const char *path, kvzch_api_v1 *api) {
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  void *symbol = handle != NULL ? dlsym(handle, "kvzch_get_api") : NULL;
  get_api_fn get_api;
  if (symbol == NULL) {
    fprintf(stderr, "%s: %s\n", path, dlerror());
    return 0;
  }
  memcpy(&get_api, &symbol, sizeof get_api);
  memset(api, 0, sizeof *api);
  return get_api(KVZCH_ABI_MAJOR, api, sizeof *api) == KVZCH_STATUS_OK;
}

int main(void) {
  kvzch_api_v1 current;
  kvzch_api_v1 older;
  struct outcome with_current;
  struct outcome with_older;

  if (!load(KVZCH_LIBRARY_PATH, &current) || !load(KVZCH_SHIM_PATH, &older)) return 1;
  CHECK(older.struct_size < current.struct_size);

  fprintf(stderr, "current library:\n");
  CHECK(serve(&current, &with_current));
  CHECK(with_current.sized_init && with_current.compacted);
  CHECK(with_current.removed_by_batch_remove && with_current.global_sink);
  CHECK(with_current.error_message);

  fprintf(stderr, "older library:\n");
  CHECK(serve(&older, &with_older));
  CHECK(!with_older.sized_init && !with_older.compacted);
  CHECK(!with_older.removed_by_batch_remove && !with_older.global_sink);
  CHECK(!with_older.error_message);

  /* Either way the host reached the same state. */
  CHECK(with_current.rows == 2 && with_older.rows == 2);
  CHECK(with_current.sink_calls == 1 && with_older.sink_calls == 1);
  CHECK(with_current.stats.hits == 2 && with_current.stats.misses == 1);
  CHECK(with_older.stats.hits == 2 && with_older.stats.misses == 1);

  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("a current host degrades cleanly on an older library\n");
  return 0;
}
