# Install rules: kvzch lays itself out like a system library.
#   lib/libkvzch.so.<version>   the cargo-built libkvzch.so (SONAME libkvzch.so.1)
#   lib/libkvzch.so.1           -> libkvzch.so.<version>: what the loader resolves
#   lib/libkvzch.so             -> libkvzch.so.1: what `-lkvzch` finds
#   lib/libkvzch.a
#   include/kvzch.h, include/kvzch.hpp
#   lib/cmake/kvzch/kvzchConfig.cmake, kvzchConfigVersion.cmake
#   lib/pkgconfig/kvzch.pc
# (lib and include as GNUInstallDirs names them.) The CMake package finds the
# prefix from where it is, so it follows a moved tree; kvzch.pc names the
# prefix it was installed under (below).
#
# Two components: kvzch_Runtime, what a host's installed binary loads (the
# real file and its SONAME link), and kvzch_Development, the rest. A host that
# pulls kvzch in with add_subdirectory and ships binaries linked to
# kvzch::kvzch sets KVZCH_INSTALL=ON and installs at least the runtime
# (`cmake --install <build> --component kvzch_Runtime`).

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KVZCH_REALNAME "libkvzch.so.${PROJECT_VERSION}")
set(KVZCH_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/kvzch")

install(FILES "${KVZCH_SHARED_LIBRARY}"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  COMPONENT kvzch_Runtime
  RENAME "${KVZCH_REALNAME}"
  PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
              WORLD_READ WORLD_EXECUTE)
# The links are made here, pointing at names that exist only once installed,
# and installed as links (CMake copies a symlink as a symlink).
set(_kvzch_links "${CMAKE_CURRENT_BINARY_DIR}/install-links")
file(MAKE_DIRECTORY "${_kvzch_links}")
file(CREATE_LINK "${KVZCH_REALNAME}" "${_kvzch_links}/${KVZCH_SONAME}" SYMBOLIC)
file(CREATE_LINK "${KVZCH_SONAME}" "${_kvzch_links}/libkvzch.so" SYMBOLIC)
install(FILES "${_kvzch_links}/${KVZCH_SONAME}"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT kvzch_Runtime)
install(FILES "${_kvzch_links}/libkvzch.so" "${KVZCH_STATIC_LIBRARY}"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT kvzch_Development)
install(FILES "${KVZCH_INCLUDE_DIR}/kvzch.h" "${KVZCH_INCLUDE_DIR}/kvzch.hpp"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT kvzch_Development)

# The libraries are not CMake-built targets, so there is no install(EXPORT):
# kvzchConfig.cmake declares the imported targets itself.
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/kvzchConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/kvzchConfig.cmake"
  INSTALL_DESTINATION "${KVZCH_INSTALL_CMAKEDIR}"
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR)
# The package version is the crate's; hosts of one major link the same SONAME.
write_basic_package_version_file(
  "${CMAKE_CURRENT_BINARY_DIR}/kvzchConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/kvzchConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/kvzchConfigVersion.cmake"
  DESTINATION "${KVZCH_INSTALL_CMAKEDIR}"
  COMPONENT kvzch_Development)

# kvzch.pc names the prefix it is installed under, written at install time:
# `cmake --install --prefix`'s, and under DESTDIR the one the files will have
# on the target system, not the staging directory. A prefix found from the
# .pc's own directory (${pcfiledir}/../..) would follow a moved tree, but
# freedesktop pkg-config 0.29 (Ubuntu 22.04's, for one) puts
# PKG_CONFIG_SYSROOT_DIR before every -I and -L, also before one found inside
# the sysroot already, so a cross build would get the sysroot twice (curl
# reverted such a .pc for that). A moved tree has `pkg-config --define-prefix`.
# An absolute libdir or includedir is used as given.
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(KVZCH_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(KVZCH_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
list(TRANSFORM KVZCH_HPP_SYSTEM_LIBRARIES PREPEND " -l" OUTPUT_VARIABLE _kvzch_pc_flags)
string(CONCAT KVZCH_PC_LIBS ${_kvzch_pc_flags})
list(TRANSFORM KVZCH_STATIC_SYSTEM_LIBRARIES PREPEND " -l" OUTPUT_VARIABLE _kvzch_pc_flags)
string(CONCAT KVZCH_PC_LIBS_PRIVATE "-Wl,${KVZCH_STATIC_LINK_OPTION} -lpthread" ${_kvzch_pc_flags})
# Everything but the prefix now; @KVZCH_PC_PREFIX@ stays for install time.
set(KVZCH_PC_PREFIX "@KVZCH_PC_PREFIX@")
configure_file("${CMAKE_CURRENT_LIST_DIR}/kvzch.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/kvzch.pc.in"
  @ONLY)
install(CODE "set(KVZCH_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${CMAKE_CURRENT_BINARY_DIR}/kvzch.pc.in\"
                 \"${CMAKE_CURRENT_BINARY_DIR}/kvzch.pc\" @ONLY)"
  COMPONENT kvzch_Development)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/kvzch.pc"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
  COMPONENT kvzch_Development)
