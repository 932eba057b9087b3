# What the test command needs from the system, sourced by .ci/run (which
# installs it) and .ci/test (which names what is missing before it starts).
# Each function prints the Debian packages this machine lacks.

# Without these the tests cannot run.
missing_required_packages() {
  command -v cmake >/dev/null || echo cmake
  # Debian's cmake only recommends make, which .ci/run does not install.
  command -v make >/dev/null || echo make
  [ -f /usr/include/gtest/gtest.h ] || echo libgtest-dev
  command -v nm >/dev/null || echo binutils
  command -v pkg-config >/dev/null || echo pkg-config
  command -v valgrind >/dev/null || echo valgrind
  # .ci/check_rust_version.py reads cargo metadata.
  command -v python3 >/dev/null || echo python3
  # The locale sources metrics_test builds its de_DE and ps_AF locales from.
  [ -f /usr/share/i18n/locales/ps_AF ] || echo locales
}

# The demo's /metrics check uses these when present and says it skipped
# without them.
missing_metrics_packages() {
  [ -f /usr/include/httplib.h ] || echo libcpp-httplib-dev
  command -v promtool >/dev/null || echo prometheus
  command -v curl >/dev/null || echo curl
}

# The C and C++ suites are built a second time with clang when it is present
# (hosts build with either compiler); the test command says it skipped that
# build without it.
missing_clang_package() {
  command -v clang++ >/dev/null || echo clang
}

missing_optional_packages() {
  missing_metrics_packages
  missing_clang_package
}
