#!/usr/bin/env bash
# predictor_demo on a library whose publishes fail after the first version
# (cpp_tests/failing_republish_shim.c): the initial publish succeeds, and each
# table's republish must be reported and counted, so that the run ends with
# FAILED and exit status 1 for that reason alone. The sanitizers also exit 1
# by default, after the summary: their reports fail the check too.
#
# usage: republish_error_check.sh DEMO SHIM
set -uo pipefail

demo=$1 shim=$2
output=$("$demo" --threads 2 --duration 2 --table user:20000:256 --table ads:5000:64 \
  --library "$shim" 2>&1)
status=$?
printf '%s\n' "$output"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
for table in user ads; do
  grep -Eq "^predictor_demo: republish $table: INVALID_ARGUMENT: .*rows_len [0-9]+ < n \\* row_bytes" <<<"$output" ||
    fail "no report of the $table table's failed republish"
done
grep -q '^  failed calls, sink exceptions          2, 0$' <<<"$output" ||
  fail "the summary does not count the 2 failed republishes"
for check in '^  fb303-style and Prometheus registries  agree$' \
  '^  read_hit_rate_stats\(\) windows summed   agree$' \
  "^  hits carrying another id's row         0$" '^FAILED$'; do
  grep -Eq "$check" <<<"$output" || fail "no line matching $check"
done
if grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer' <<<"$output"; then
  fail "a sanitizer reported an error"
fi
