// kvzch.h is self-contained as C++17: nothing included before it.
#include "kvzch.h"

uint32_t kvzch_h_alone_major();

uint32_t kvzch_h_alone_major() { return kvzch_abi_version() >> 16; }
