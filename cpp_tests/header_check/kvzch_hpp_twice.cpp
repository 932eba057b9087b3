// kvzch.hpp has an include guard: a second include is harmless.
#include "kvzch.hpp"
#include "kvzch.hpp"

kvzch_cache_info kvzch_hpp_alone_info();

int main() {
  try {
    return kvzch_hpp_alone_info().row_bytes == 8 ? 0 : 1;
  } catch (const kvzch::Error&) {
    return 1;
  }
}
