/* kvzch.h is self-contained as C99: nothing included before it. */
#include "kvzch.h"

uint32_t kvzch_h_alone_major(void);

uint32_t kvzch_h_alone_major(void) { return kvzch_abi_version() >> 16; }
