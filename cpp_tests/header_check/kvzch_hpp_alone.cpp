// kvzch.hpp is self-contained as C++17: nothing included before it.
#include "kvzch.hpp"

kvzch_cache_info kvzch_hpp_alone_info();

kvzch_cache_info kvzch_hpp_alone_info() {
  kvzch::Cache cache(kvzch::Options().row_bytes(8));
  return cache.info();
}
