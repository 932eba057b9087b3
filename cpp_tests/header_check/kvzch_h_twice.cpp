// kvzch.h has an include guard: a second include is harmless.
#include "kvzch.h"
#include "kvzch.h"

uint32_t kvzch_h_alone_major();

int main() {
  return kvzch_h_alone_major() == KVZCH_ABI_MAJOR && kvzch_has_feature("plugin_api_v1") ? 0 : 1;
}
