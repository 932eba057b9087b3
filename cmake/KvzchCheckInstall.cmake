# .ci/test script: an installed kvzch has the layout of a system library.
#   cmake -DPREFIX=<install prefix> [-DLIBDIR=<CMAKE_INSTALL_LIBDIR>] -P KvzchCheckInstall.cmake
# The consumers built against the prefix prove each file works for its use;
# this pins what they cannot see: the real file carries the package version
# in its name and the ABI major in its SONAME, each link points one step down
# the chain (so replacing the real file updates both), and the headers are
# the committed ones.

cmake_minimum_required(VERSION 3.16)

if(NOT DEFINED PREFIX)
  message(FATAL_ERROR "KvzchCheckInstall.cmake needs -DPREFIX=...")
endif()
if(NOT LIBDIR)
  set(LIBDIR lib)
endif()
set(libdir "${PREFIX}/${LIBDIR}")
set(soname "libkvzch.so.1")
set(problems "")

# The package version, as the installed CMake package states it.
include("${libdir}/cmake/kvzch/kvzchConfigVersion.cmake")
set(realname "libkvzch.so.${PACKAGE_VERSION}")

if(NOT EXISTS "${libdir}/${realname}" OR IS_SYMLINK "${libdir}/${realname}")
  string(APPEND problems "  ${realname} is not a regular file\n")
else()
  find_program(OBJDUMP objdump)
  if(NOT OBJDUMP)
    message(FATAL_ERROR "objdump not found (binutils)")
  endif()
  execute_process(COMMAND "${OBJDUMP}" -p "${libdir}/${realname}" OUTPUT_VARIABLE dynamic)
  string(REGEX MATCH "SONAME +([^\n]+)" ignored "${dynamic}")
  if(NOT CMAKE_MATCH_1 STREQUAL soname)
    string(APPEND problems "  ${realname} has SONAME '${CMAKE_MATCH_1}', expected ${soname}\n")
  endif()
endif()

foreach(link_and_target "${soname}>${realname}" "libkvzch.so>${soname}")
  string(REPLACE ">" ";" pair "${link_and_target}")
  list(GET pair 0 link)
  list(GET pair 1 target)
  if(NOT IS_SYMLINK "${libdir}/${link}")
    string(APPEND problems "  ${link} is not a symlink\n")
    continue()
  endif()
  file(READ_SYMLINK "${libdir}/${link}" points_to)
  if(NOT points_to STREQUAL target)
    string(APPEND problems "  ${link} -> ${points_to}, expected -> ${target}\n")
  endif()
endforeach()

foreach(file libkvzch.a cmake/kvzch/kvzchConfig.cmake pkgconfig/kvzch.pc)
  if(NOT EXISTS "${libdir}/${file}")
    string(APPEND problems "  ${LIBDIR}/${file} is missing\n")
  endif()
endforeach()

foreach(header kvzch.h kvzch.hpp)
  set(installed "${PREFIX}/include/${header}")
  if(NOT EXISTS "${installed}")
    string(APPEND problems "  include/${header} is missing\n")
    continue()
  endif()
  file(SHA256 "${installed}" installed_hash)
  file(SHA256 "${CMAKE_CURRENT_LIST_DIR}/../include/${header}" committed_hash)
  if(NOT installed_hash STREQUAL committed_hash)
    string(APPEND problems "  include/${header} differs from the committed one\n")
  endif()
endforeach()

if(problems)
  message(FATAL_ERROR "install tree ${PREFIX}:\n${problems}")
endif()
message(STATUS "install tree: ${realname} (SONAME ${soname}) and its links, libkvzch.a, headers, "
               "CMake package and kvzch.pc")
