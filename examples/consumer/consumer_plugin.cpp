// A host's shared library that uses kvzch and exports one function of its
// own; linked with libkvzch.a, it must not export the archive's symbols.
#include "kvzch.h"

extern "C" __attribute__((visibility("default"))) uint32_t kvzch_consumer_plugin_abi();

extern "C" uint32_t kvzch_consumer_plugin_abi() { return kvzch_abi_version(); }
