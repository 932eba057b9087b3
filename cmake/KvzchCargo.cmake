# Builds the Rust crate with cargo and exposes it as two imported targets:
#   kvzch::kvzch         libkvzch.so (SONAME libkvzch.so.1)
#   kvzch::kvzch_static  libkvzch.a
# cargo runs at build time only, so configuring never touches the network.

if(DEFINED ENV{CARGO} AND NOT "$ENV{CARGO}" STREQUAL "")
  set(_kvzch_cargo_default "$ENV{CARGO}")
else()
  find_program(_kvzch_cargo_found cargo
    HINTS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin")
  set(_kvzch_cargo_default "${_kvzch_cargo_found}")
endif()
set(KVZCH_CARGO "${_kvzch_cargo_default}" CACHE FILEPATH "The cargo that builds libkvzch")
if(NOT KVZCH_CARGO)
  message(FATAL_ERROR "cargo not found: install Rust or set CARGO / KVZCH_CARGO")
endif()

find_package(Threads REQUIRED)

set(KVZCH_RUST_TARGET "" CACHE STRING
  "The Rust target triple to build libkvzch for when cross-compiling (e.g. aarch64-unknown-linux-gnu), linked with CMAKE_C_COMPILER (given CMAKE_SYSROOT, and for clang CMAKE_C_COMPILER_TARGET); empty: the build machine's")

# Under kvzch's own binary directory, so that a host that pulls kvzch in with
# add_subdirectory keeps its top-level build directory to itself.
set(KVZCH_CARGO_TARGET_DIR "${CMAKE_CURRENT_BINARY_DIR}/cargo")
# cargo is always told the target: a CARGO_BUILD_TARGET in the environment,
# or a `[build] target` in a cargo configuration file (the user's, the source
# tree's, or one in a directory above it), would otherwise build for another
# target and put the libraries where these paths do not look.
set(_kvzch_cargo_env "CARGO_TARGET_DIR=${KVZCH_CARGO_TARGET_DIR}")
# Both would otherwise surface only at link time, as "file in wrong format".
if(CMAKE_SIZEOF_VOID_P AND NOT CMAKE_SIZEOF_VOID_P EQUAL 8)
  math(EXPR _kvzch_bits "${CMAKE_SIZEOF_VOID_P} * 8")
  message(FATAL_ERROR "kvzch builds for 64-bit targets only; this build's compiler targets "
    "${_kvzch_bits}-bit code")
endif()
# A toolchain file for the build machine's own system (a sysroot) builds for
# the build machine's Rust target, as a native build does.
if(CMAKE_CROSSCOMPILING AND NOT KVZCH_RUST_TARGET AND NOT
   (CMAKE_SYSTEM_NAME STREQUAL CMAKE_HOST_SYSTEM_NAME AND
    CMAKE_SYSTEM_PROCESSOR STREQUAL CMAKE_HOST_SYSTEM_PROCESSOR))
  message(FATAL_ERROR "cross-compiling for ${CMAKE_SYSTEM_NAME} ${CMAKE_SYSTEM_PROCESSOR}: set "
    "KVZCH_RUST_TARGET to the Rust triple to build libkvzch for (e.g. aarch64-unknown-linux-gnu)")
endif()
if(KVZCH_RUST_TARGET)
  set(_kvzch_rust_target "${KVZCH_RUST_TARGET}")
else()
  # The build machine's own triple, as the cargo the build runs reports it:
  # from the source tree, where rustup picks the toolchain the build gets.
  execute_process(COMMAND "${KVZCH_CARGO}" -vV
    WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}"
    OUTPUT_VARIABLE _kvzch_cargo_about ERROR_VARIABLE _kvzch_cargo_error
    RESULT_VARIABLE _kvzch_cargo_status)
  if(NOT _kvzch_cargo_status EQUAL 0 OR NOT _kvzch_cargo_about MATCHES "\nhost: ([^\n]+)")
    message(FATAL_ERROR "`${KVZCH_CARGO} -vV` names no host triple (set KVZCH_RUST_TARGET):\n"
      "${_kvzch_cargo_error}${_kvzch_cargo_about}")
  endif()
  set(_kvzch_rust_target "${CMAKE_MATCH_1}")
endif()
# cargo links libkvzch with the C compiler CMake builds with, as the host's
# own libraries are linked, not with its default `cc`: a machine with clang
# alone has none, and another has it as another compiler than the host's. (In
# a native build the crate's build scripts are linked with it too.) It gets
# what the toolchain file gives that compiler to reach the target: a clang is
# one compiler for every target, told which by --target, and a sysroot holds
# the target's C library.
set(_kvzch_link_arguments "")
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  if(CMAKE_C_COMPILER_TARGET)
    list(APPEND _kvzch_link_arguments "--target=${CMAKE_C_COMPILER_TARGET}")
  endif()
  if(CMAKE_C_COMPILER_EXTERNAL_TOOLCHAIN)
    list(APPEND _kvzch_link_arguments "--gcc-toolchain=${CMAKE_C_COMPILER_EXTERNAL_TOOLCHAIN}")
  endif()
endif()
if(CMAKE_SYSROOT)
  list(APPEND _kvzch_link_arguments "--sysroot=${CMAKE_SYSROOT}")
endif()
# A cargo linker is a program without arguments: where the compiler needs
# some, a script in the build directory passes them; where it needs none, the
# linker is the compiler's own path, the same in every build directory, so
# build trees that share a cargo directory (as CI's sanitizer builds do) do
# not relink each other's libraries.
if(_kvzch_link_arguments)
  set(_kvzch_linker_script "#!/bin/sh\nexec")
  foreach(_kvzch_word IN ITEMS "${CMAKE_C_COMPILER}" ${_kvzch_link_arguments})
    string(REPLACE "'" "'\\''" _kvzch_word "${_kvzch_word}")
    string(APPEND _kvzch_linker_script " '${_kvzch_word}'")
  endforeach()
  string(APPEND _kvzch_linker_script " \"$@\"\n")
  # Named after its contents: cargo relinks when the linker's path changes,
  # not when the script behind a path does. Written aside, then copied
  # executable (file(CHMOD) needs CMake 3.19).
  string(MD5 _kvzch_linker_digest "${_kvzch_linker_script}")
  string(SUBSTRING "${_kvzch_linker_digest}" 0 12 _kvzch_linker_digest)
  set(_kvzch_linker_name "kvzch-rust-linker-${_kvzch_linker_digest}")
  set(_kvzch_rust_linker "${CMAKE_CURRENT_BINARY_DIR}/${_kvzch_linker_name}")
  set(_kvzch_linker_draft "${CMAKE_CURRENT_BINARY_DIR}/kvzch-rust-linker.draft")
  file(WRITE "${_kvzch_linker_draft}/${_kvzch_linker_name}" "${_kvzch_linker_script}")
  file(COPY "${_kvzch_linker_draft}/${_kvzch_linker_name}" DESTINATION "${CMAKE_CURRENT_BINARY_DIR}"
    FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                     WORLD_READ WORLD_EXECUTE)
  file(REMOVE_RECURSE "${_kvzch_linker_draft}")
else()
  set(_kvzch_rust_linker "${CMAKE_C_COMPILER}")
endif()
string(TOUPPER "${_kvzch_rust_target}" _kvzch_target_var)
string(REPLACE "-" "_" _kvzch_target_var "${_kvzch_target_var}")
list(APPEND _kvzch_cargo_env "CARGO_TARGET_${_kvzch_target_var}_LINKER=${_kvzch_rust_linker}")
set(_kvzch_cargo_target --target "${_kvzch_rust_target}")
set(_kvzch_release_dir "${KVZCH_CARGO_TARGET_DIR}/${_kvzch_rust_target}/release")
# build.rs sets it: the ABI major, so a 2.x library never satisfies a 1.x host.
set(KVZCH_SONAME "libkvzch.so.1")
set(KVZCH_SHARED_LIBRARY "${_kvzch_release_dir}/libkvzch.so")
set(KVZCH_SONAME_LINK "${_kvzch_release_dir}/${KVZCH_SONAME}")
set(KVZCH_STATIC_LIBRARY "${_kvzch_release_dir}/libkvzch.a")
set(KVZCH_INCLUDE_DIR "${CMAKE_CURRENT_SOURCE_DIR}/include")

# The target always runs and lets cargo's own fingerprints decide whether to
# rebuild: a DEPENDS list of Rust sources would go stale as the crate grows,
# and a no-op cargo build costs well under a second. Dependents relink only
# when cargo actually rewrites the libraries.
#
# Executables record the SONAME, libkvzch.so.1, not the file they linked, so
# running them from the build tree needs that link beside libkvzch.so. CMake
# already puts this directory in the build RUNPATH of whatever links
# kvzch::kvzch (it does so for every imported shared library), so no
# BUILD_RPATH of our own is needed.
add_custom_target(kvzch_cargo ALL
  COMMAND "${CMAKE_COMMAND}" -E env ${_kvzch_cargo_env}
          "${KVZCH_CARGO}" build --release --locked ${_kvzch_cargo_target}
          --manifest-path "${CMAKE_CURRENT_SOURCE_DIR}/Cargo.toml"
  COMMAND "${CMAKE_COMMAND}" -E create_symlink libkvzch.so "${KVZCH_SONAME_LINK}"
  BYPRODUCTS "${KVZCH_SHARED_LIBRARY}" "${KVZCH_SONAME_LINK}" "${KVZCH_STATIC_LIBRARY}"
  WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}"
  COMMENT "cargo build --release --locked (libkvzch.so, libkvzch.a)"
  USES_TERMINAL
  VERBATIM)

# What kvzch.hpp's kvzch::Library calls (dlopen, dlsym, dlclose) needs from the
# system: libdl before glibc 2.34, where a host that links only libkvzch.so
# fails with "DSO missing from command line". Harmless where libc has them.
# The installed kvzchConfig.cmake and kvzch.pc (Libs) list the same.
set(KVZCH_HPP_SYSTEM_LIBRARIES ${CMAKE_DL_LIBS})
add_library(kvzch::kvzch SHARED IMPORTED GLOBAL)
set_target_properties(kvzch::kvzch PROPERTIES
  IMPORTED_LOCATION "${KVZCH_SHARED_LIBRARY}"
  IMPORTED_SONAME "${KVZCH_SONAME}"
  INTERFACE_INCLUDE_DIRECTORIES "${KVZCH_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES "${KVZCH_HPP_SYSTEM_LIBRARIES}")
add_dependencies(kvzch::kvzch kvzch_cargo)

# What Rust's std needs from the system when linked statically, as reported by
# `cargo rustc --release --crate-type staticlib -- --print native-static-libs`
# (gcc_s and c come with every C/C++ link already), besides threads. The
# installed kvzchConfig.cmake and kvzch.pc (Libs.private) list the same.
set(KVZCH_STATIC_SYSTEM_LIBRARIES ${CMAKE_DL_LIBS} m rt util)
# A host that links the archive into a shared library of its own would
# otherwise export the archive's symbols from it: the kvzch_ functions, and
# Rust std's (rust_eh_personality and some 150 mangled ones), which another
# Rust library in the process could bind to. The installed kvzchConfig.cmake
# and kvzch.pc (Libs.private) say the same.
set(KVZCH_STATIC_LINK_OPTION "--exclude-libs,libkvzch.a")
add_library(kvzch::kvzch_static STATIC IMPORTED GLOBAL)
set_target_properties(kvzch::kvzch_static PROPERTIES
  IMPORTED_LOCATION "${KVZCH_STATIC_LIBRARY}"
  IMPORTED_LINK_INTERFACE_LANGUAGES "C"
  INTERFACE_INCLUDE_DIRECTORIES "${KVZCH_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES "Threads::Threads;${KVZCH_STATIC_SYSTEM_LIBRARIES}"
  INTERFACE_LINK_OPTIONS "LINKER:${KVZCH_STATIC_LINK_OPTION}")
add_dependencies(kvzch::kvzch_static kvzch_cargo)
