# ctest script: every symbol kvzch.hpp put into a program lives in the inline
# namespace of this release (kvzch::v<major>_<minor>_<patch>, the package
# version), so that shared libraries of one process built against different
# releases of the header never bind to each other's definitions.
#   cmake -DNM=... -DBINARY=<a program built with kvzch.hpp> -DVERSION=1.2.0
#         -P KvzchCheckHeaderNamespace.cmake

cmake_minimum_required(VERSION 3.16)
include("${CMAKE_CURRENT_LIST_DIR}/KvzchToolOutput.cmake")

foreach(var NM BINARY VERSION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "KvzchCheckHeaderNamespace.cmake needs -D${var}=...")
  endif()
endforeach()

string(REPLACE "." "_" release "v${VERSION}")
kvzch_tool_output(nm_output "${NM}" -C "${BINARY}")

string(REGEX MATCHALL "kvzch::[A-Za-z0-9_]*" names "${nm_output}")
list(LENGTH names count)
if(count EQUAL 0)
  message(FATAL_ERROR "${BINARY} holds no kvzch:: symbol: nothing to check")
endif()
set(outside "")
foreach(name IN LISTS names)
  if(NOT name STREQUAL "kvzch::${release}")
    list(APPEND outside "${name}")
  endif()
endforeach()
if(outside)
  list(REMOVE_DUPLICATES outside)
  list(JOIN outside ", " outside)
  message(FATAL_ERROR "${BINARY} has kvzch.hpp symbols outside kvzch::${release}:: "
    "(${outside}); the header's inline namespace must be named after the package version")
endif()
message(STATUS "${count} kvzch.hpp symbol names, all in kvzch::${release}::")
