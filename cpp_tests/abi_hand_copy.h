/*
 * A hand copy of the "Declarations" block of docs/ABI.md (1.0), pasted
 * verbatim between the include guard and the extern "C" wrapper, which are
 * the only additions. Tests built against this file instead of the generated
 * include/kvzch.h prove that a host compiled from the contract alone works
 * with the library. Do not regenerate it from the library: that would test
 * the header against itself.
 */
#ifndef KVZCH_ABI_HAND_COPY_H
#define KVZCH_ABI_HAND_COPY_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVZCH_ABI_MAJOR 1
#define KVZCH_ABI_MINOR 0

typedef struct kvzch_cache kvzch_cache;           /* opaque */

typedef enum kvzch_status {
  KVZCH_STATUS_OK = 0,
  KVZCH_STATUS_NULL_ARGUMENT = 1,      /* a required pointer was NULL */
  KVZCH_STATUS_INVALID_ARGUMENT = 2,   /* a value out of range, a short buffer, an overflow */
  KVZCH_STATUS_OUT_OF_MEMORY = 3,      /* an allocation failed */
  KVZCH_STATUS_CAPACITY_EXCEEDED = 4,  /* max_rows / max_memory_bytes reached and nothing may be evicted */
  KVZCH_STATUS_NOT_FOUND = 5,          /* e.g. an unknown sink id */
  KVZCH_STATUS_UNSUPPORTED = 6,        /* an option or ABI major this build does not have */
  KVZCH_STATUS_WOULD_DEADLOCK = 7,     /* reserved */
  KVZCH_STATUS_INTERNAL = 8,           /* a bug caught at the boundary */
} kvzch_status;

/* Options: set struct_size, or call kvzch_options_init first. */
typedef struct kvzch_options {
  uint32_t struct_size;        /* sizeof(kvzch_options) as the host compiled it */
  uint32_t row_bytes;          /* required: 1 ..= 65536 */
  uint32_t num_shards;         /* 0 = library default; else rounded up to a power of two, <= 65536 */
  uint32_t miss_policy;        /* KVZCH_MISS_ZERO_FILL (0, default) or KVZCH_MISS_LEAVE_UNTOUCHED (1) */
  uint64_t max_rows;           /* 0 = unbounded */
  uint64_t max_memory_bytes;   /* 0 = unbounded */
  const char *name;            /* table name, [A-Za-z0-9_.-]{1,64}; NULL = "default" */
} kvzch_options;
#define KVZCH_MISS_ZERO_FILL 0
#define KVZCH_MISS_LEAVE_UNTOUCHED 1

/* Per-batch counts, returned by batch_get and passed to sinks. */
typedef struct kvzch_batch_stats {
  uint64_t hits;
  uint64_t misses;
  uint64_t total;              /* hits + misses == total == n */
  uint64_t duration_ns;        /* wall time of the lookup itself */
} kvzch_batch_stats;

/* Read-time hit/miss counts. hits + misses == total, always. */
typedef struct kvzch_read_stats {
  uint64_t hits;
  uint64_t misses;
  uint64_t total;
} kvzch_read_stats;

typedef struct kvzch_cache_info {
  uint32_t struct_size;        /* set by the host; the library fills at most this many bytes */
  uint32_t row_bytes;
  uint32_t num_shards;
  uint32_t reserved;
  uint64_t rows;               /* rows stored now */
  uint64_t memory_bytes;       /* bytes the cache holds: rows, metadata, index, free space */
} kvzch_cache_info;

/* What a sink receives once per batch_get. Valid only during the call. */
typedef struct kvzch_batch_event {
  uint32_t struct_size;        /* sizeof as the library built it */
  uint32_t reserved;
  const char *table;           /* the cache's name */
  kvzch_batch_stats stats;
} kvzch_batch_event;

typedef void (*kvzch_stat_sink_fn)(void *user_data, const kvzch_batch_event *event);

/* Canonical counter names (the predictor-side export names upstream). */
#define KVZCH_STAT_READ_HIT_COUNT 0    /* "kvzch.inference.read_hit_count" */
#define KVZCH_STAT_READ_MISS_COUNT 1   /* "kvzch.inference.read_miss_count" */
#define KVZCH_STAT_READ_TOTAL_COUNT 2  /* "kvzch.inference.read_total_count" */

/* --- version, features, errors --- */
uint32_t    kvzch_abi_version(void);              /* (KVZCH_ABI_MAJOR << 16) | KVZCH_ABI_MINOR of the loaded library */
const char *kvzch_version(void);                  /* the crate's semver, e.g. "0.1.0" */
bool        kvzch_has_feature(const char *name);  /* NULL or unknown name: false */
const char *kvzch_status_name(kvzch_status status); /* "OK", "NULL_ARGUMENT", ...; unknown value: "UNKNOWN" */
size_t      kvzch_last_error_message(char *buf, size_t len);
            /* copies this thread's last error (NUL-terminated, truncated to len-1);
               returns its full length without the NUL; 0 if none; buf may be NULL when len == 0 */
const char *kvzch_stat_name(uint32_t stat);       /* KVZCH_STAT_*; unknown: NULL */

/* --- lifecycle --- */
void         kvzch_options_init(kvzch_options *opts);   /* defaults, struct_size = sizeof; NULL: no-op */
kvzch_status kvzch_cache_create(const kvzch_options *opts, kvzch_cache **out);
void         kvzch_cache_destroy(kvzch_cache *cache);   /* NULL: no-op */

/* --- data --- */
kvzch_status kvzch_cache_batch_set(kvzch_cache *cache, const int64_t *ids, size_t n,
                                   const void *rows, size_t rows_len, uint32_t timestamp);
kvzch_status kvzch_cache_batch_get(kvzch_cache *cache, const int64_t *ids, size_t n,
                                   void *out, size_t out_len,
                                   uint8_t *hit_mask,           /* optional: n bytes, 1 = hit, 0 = miss */
                                   kvzch_batch_stats *stats);   /* optional */
kvzch_status kvzch_cache_batch_remove(kvzch_cache *cache, const int64_t *ids, size_t n,
                                      uint64_t *out_removed);   /* optional */
kvzch_status kvzch_cache_evict_older_than(kvzch_cache *cache, uint32_t threshold,
                                          uint64_t *out_evicted); /* optional */
kvzch_status kvzch_cache_get_info(const kvzch_cache *cache, kvzch_cache_info *out);

/* --- read-time hit rate --- */
kvzch_status kvzch_cache_get_read_hit_rate_stats(kvzch_cache *cache, kvzch_read_stats *out);
kvzch_status kvzch_cache_get_cumulative_read_stats(const kvzch_cache *cache, kvzch_read_stats *out);

/* --- stat sinks --- */
kvzch_status kvzch_cache_register_stat_sink(kvzch_cache *cache, kvzch_stat_sink_fn fn,
                                            void *user_data, uint64_t *out_id);
kvzch_status kvzch_cache_unregister_stat_sink(kvzch_cache *cache, uint64_t id);
kvzch_status kvzch_register_global_stat_sink(kvzch_stat_sink_fn fn, void *user_data, uint64_t *out_id);
kvzch_status kvzch_unregister_global_stat_sink(uint64_t id);

/* --- plugin entry: one dlsym gives the whole table --- */
typedef struct kvzch_api_v1 {
  uint32_t struct_size;        /* bytes the library filled */
  uint32_t abi_version;
  uint32_t     (*abi_version_fn)(void);
  const char  *(*version)(void);
  bool         (*has_feature)(const char *);
  const char  *(*status_name)(kvzch_status);
  size_t       (*last_error_message)(char *, size_t);
  const char  *(*stat_name)(uint32_t);
  void         (*options_init)(kvzch_options *);
  kvzch_status (*cache_create)(const kvzch_options *, kvzch_cache **);
  void         (*cache_destroy)(kvzch_cache *);
  kvzch_status (*cache_batch_set)(kvzch_cache *, const int64_t *, size_t, const void *, size_t, uint32_t);
  kvzch_status (*cache_batch_get)(kvzch_cache *, const int64_t *, size_t, void *, size_t, uint8_t *, kvzch_batch_stats *);
  kvzch_status (*cache_batch_remove)(kvzch_cache *, const int64_t *, size_t, uint64_t *);
  kvzch_status (*cache_evict_older_than)(kvzch_cache *, uint32_t, uint64_t *);
  kvzch_status (*cache_get_info)(const kvzch_cache *, kvzch_cache_info *);
  kvzch_status (*cache_get_read_hit_rate_stats)(kvzch_cache *, kvzch_read_stats *);
  kvzch_status (*cache_get_cumulative_read_stats)(const kvzch_cache *, kvzch_read_stats *);
  kvzch_status (*cache_register_stat_sink)(kvzch_cache *, kvzch_stat_sink_fn, void *, uint64_t *);
  kvzch_status (*cache_unregister_stat_sink)(kvzch_cache *, uint64_t);
  kvzch_status (*register_global_stat_sink)(kvzch_stat_sink_fn, void *, uint64_t *);
  kvzch_status (*unregister_global_stat_sink)(uint64_t);
  /* later minor versions append entries here, never elsewhere */
} kvzch_api_v1;

kvzch_status kvzch_get_api(uint32_t abi_major, kvzch_api_v1 *table, size_t table_size);

#ifdef __cplusplus
}
#endif

#endif /* KVZCH_ABI_HAND_COPY_H */
