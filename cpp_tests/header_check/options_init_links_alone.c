/* kvzch_options_init, as kvzch.h defines it for the code that includes it,
 * needs no symbol of the library. This program links nothing of kvzch: a
 * header whose kvzch_options_init called into the library (say
 * kvzch_options_init_sized, which a 1.0 library lacks) fails to link here,
 * as a host built against it would fail to load with an older
 * libkvzch.so.1. */
#include "kvzch.h"

#include <string.h>

int main(void) {
  kvzch_options opts;
  memset(&opts, 0xAB, sizeof opts);
  kvzch_options_init(&opts);
  kvzch_options_init(NULL);
  return opts.struct_size == sizeof opts && opts.row_bytes == 0 && opts.num_shards == 0 &&
                 opts.miss_policy == KVZCH_MISS_ZERO_FILL && opts.max_rows == 0 &&
                 opts.max_memory_bytes == 0 && opts.name == NULL &&
                 opts.eviction_policy == KVZCH_EVICT_NONE && opts.reserved1 == 0
             ? 0
             : 1;
}
