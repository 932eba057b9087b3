# ctest script: the shared library's dynamic interface is exactly the ABI.
#   cmake -DNM=... -DOBJDUMP=... -DLIBRARY=libkvzch.so -P KvzchCheckExports.cmake
# Any other exported symbol would be something a host could come to depend
# on, outside the versioned contract; the SONAME is what the loader resolves.

cmake_minimum_required(VERSION 3.16)

set(abi_1_0_functions
  kvzch_abi_version kvzch_version kvzch_has_feature kvzch_status_name
  kvzch_last_error_message kvzch_stat_name kvzch_options_init
  kvzch_cache_create kvzch_cache_destroy kvzch_cache_batch_set
  kvzch_cache_batch_get kvzch_cache_batch_remove kvzch_cache_evict_older_than
  kvzch_cache_get_info kvzch_cache_get_read_hit_rate_stats
  kvzch_cache_get_cumulative_read_stats kvzch_cache_register_stat_sink
  kvzch_cache_unregister_stat_sink kvzch_register_global_stat_sink
  kvzch_unregister_global_stat_sink kvzch_get_api)

execute_process(
  COMMAND "${NM}" -D --defined-only "${LIBRARY}"
  OUTPUT_VARIABLE nm_output
  RESULT_VARIABLE nm_result)
if(NOT nm_result EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${LIBRARY}")
endif()

string(REGEX MATCHALL "[^\n]+" lines "${nm_output}")
set(exported "")
set(foreign "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE "^.* " "" symbol "${line}")
  string(REGEX REPLACE "@.*$" "" symbol "${symbol}")
  list(APPEND exported "${symbol}")
  if(NOT symbol MATCHES "^kvzch_")
    list(APPEND foreign "${symbol}")
  endif()
endforeach()

set(missing "")
foreach(fn IN LISTS abi_1_0_functions)
  if(NOT fn IN_LIST exported)
    list(APPEND missing "${fn}")
  endif()
endforeach()

execute_process(
  COMMAND "${OBJDUMP}" -p "${LIBRARY}"
  OUTPUT_VARIABLE objdump_output
  RESULT_VARIABLE objdump_result)
if(NOT objdump_result EQUAL 0)
  message(FATAL_ERROR "${OBJDUMP} failed on ${LIBRARY}")
endif()
string(REGEX MATCH "SONAME +([^\n]+)" soname_line "${objdump_output}")
set(soname "${CMAKE_MATCH_1}")

set(problems "")
if(foreign)
  string(APPEND problems "exported symbols without the kvzch_ prefix: ${foreign}\n")
endif()
if(missing)
  string(APPEND problems "ABI 1.0 functions not exported: ${missing}\n")
endif()
if(NOT soname STREQUAL "libkvzch.so.1")
  string(APPEND problems "SONAME is '${soname}', expected libkvzch.so.1\n")
endif()
if(problems)
  message(FATAL_ERROR "${LIBRARY}:\n${problems}")
endif()
list(LENGTH exported count)
message(STATUS "${count} exported symbols, all kvzch_; SONAME ${soname}")
