# ctest script: the shared library's dynamic interface is exactly the ABI.
#   cmake -DNM=... -DOBJDUMP=... -DLIBRARY=libkvzch.so -DSYMBOLS=abi/symbols.txt
#         -P KvzchCheckExports.cmake
# SYMBOLS is the checked-in list of exported names. A listed name the library
# no longer exports breaks every host that calls it; an exported name that is
# not listed is either an ABI addition nobody wrote down (and so skipped the
# steps of docs/ABI_POLICY.md) or a symbol leaking out of the library, which
# a host could come to depend on outside the versioned contract. The SONAME
# is what the loader resolves, so it is checked too.

cmake_minimum_required(VERSION 3.16)
include("${CMAKE_CURRENT_LIST_DIR}/KvzchToolOutput.cmake")

foreach(var NM OBJDUMP LIBRARY SYMBOLS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "KvzchCheckExports.cmake needs -D${var}=...")
  endif()
endforeach()

file(STRINGS "${SYMBOLS}" symbol_lines)
set(listed "")
foreach(line IN LISTS symbol_lines)
  string(REGEX REPLACE "#.*$" "" line "${line}")
  string(STRIP "${line}" line)
  if(line STREQUAL "")
    continue()
  endif()
  if(NOT line MATCHES "^kvzch_[a-z0-9_]+$")
    message(FATAL_ERROR "${SYMBOLS}: '${line}' is not a kvzch_ function name")
  endif()
  list(APPEND listed "${line}")
endforeach()

kvzch_tool_output(nm_output "${NM}" -D --defined-only "${LIBRARY}")

string(REGEX MATCHALL "[^\n]+" lines "${nm_output}")
set(exported "")
set(foreign "")
set(unlisted "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE "^.* " "" symbol "${line}")
  string(REGEX REPLACE "@.*$" "" symbol "${symbol}")
  list(APPEND exported "${symbol}")
  if(NOT symbol MATCHES "^kvzch_")
    list(APPEND foreign "${symbol}")
  elseif(NOT symbol IN_LIST listed)
    list(APPEND unlisted "${symbol}")
  endif()
endforeach()

set(removed "")
foreach(symbol IN LISTS listed)
  if(NOT symbol IN_LIST exported)
    list(APPEND removed "${symbol}")
  endif()
endforeach()

kvzch_tool_output(objdump_output "${OBJDUMP}" -p "${LIBRARY}")
string(REGEX MATCH "SONAME +([^\n]+)" soname_line "${objdump_output}")
set(soname "${CMAKE_MATCH_1}")

# Each problem on its own indented line, which message() prints as it is
# rather than rewrapping it.
set(problems "")
if(removed)
  string(APPEND problems "  listed in ${SYMBOLS} but no longer exported (a removal breaks "
                         "every host that calls them): ${removed}\n")
endif()
if(unlisted)
  string(APPEND problems "  exported but not in ${SYMBOLS} (an ABI addition: append them there, "
                         "following docs/ABI_POLICY.md): ${unlisted}\n")
endif()
if(foreign)
  string(APPEND problems "  exported symbols without the kvzch_ prefix: ${foreign}\n")
endif()
if(NOT soname STREQUAL "libkvzch.so.1")
  string(APPEND problems "  SONAME is '${soname}', expected libkvzch.so.1\n")
endif()
if(problems)
  message(FATAL_ERROR "${LIBRARY}:\n${problems}")
endif()
list(LENGTH exported count)
message(STATUS "${count} exported symbols, exactly those of ${SYMBOLS}; SONAME ${soname}")
