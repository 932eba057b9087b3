#!/usr/bin/env bash
# predictor_demo on a faulty library: a test shim that hands out the real
# library's table with cache_batch_set wrapped. The run must end with FAILED
# and exit status 1 for that fault alone, its other checks passing; a library
# that is only slow must end OK with status 0. The sanitizers exit 1 by
# default, after the summary: their reports fail the check too.
#
# usage: faulty_library_check.sh DEMO SHIM FAULT
#   FAULT republish-error  cpp_tests/failing_republish_shim.c: publishes after
#                          the first version are refused; each table's
#                          republish must be reported and counted
#   FAULT lost-rows        cpp_tests/half_publish_shim.c: each publish stores
#                          half its rows and reports success; the stored ids
#                          that then miss must be counted, and each republish
#                          fails its eviction's count
#   FAULT slow-republish   cpp_tests/slow_republish_shim.c: each batch_set
#                          after the first version sleeps half a second, so
#                          user's republish outlasts the traffic; the run must
#                          wait for it and check its eviction
set -uo pipefail

demo=$1 shim=$2 fault=$3
output=$("$demo" --threads 2 --duration 2 --table user:20000:256 --table ads:5000:64 \
  --library "$shim" 2>&1)
status=$?
printf '%s\n' "$output"

fail() {
  echo "FAIL ($fault): $*" >&2
  exit 1
}
expect_line() {
  grep -Eq "$1" <<<"$output" || fail "no line matching $1"
}
expected_status=1 expected_end=FAILED republished=0
case $fault in
  republish-error)
    for table in user ads; do
      expect_line "^predictor_demo: republish $table: INVALID_ARGUMENT: .*rows_len [0-9]+ < n \\* row_bytes"
    done
    expect_line '^  failed calls, sink exceptions          2, 0$'
    expect_line '^  stored ids that missed                 0$'
    ;;
  slow-republish)
    expected_status=0 expected_end=OK republished=2
    for table_evicted in user:10000 ads:2500; do
      expect_line "^\\[ *[0-9.]+s\\] ${table_evicted%:*}: republished; evict_older_than\\([0-9]+\\) removed ${table_evicted#*:} rows"
    done
    # Five batches of user's 20000 rows at half a second each, from 1 s into
    # a 2 s run: the report of its republish follows the last second's.
    last_second=$(grep -En '^\[ *[0-9.]+s\] +[0-9.]+ M rows/s' <<<"$output" | tail -n 1 | cut -d: -f1)
    user_republished=$(grep -En '^\[ *[0-9.]+s\] user: republished' <<<"$output" | cut -d: -f1)
    [ -n "$last_second" ] && [ -n "$user_republished" ] && [ "$user_republished" -gt "$last_second" ] ||
      fail "user's republish did not outlast the traffic"
    expect_line '^  stored ids that missed                 0$'
    expect_line '^  failed calls, sink exceptions          0, 0$'
    ;;
  lost-rows)
    expect_line '^  stored ids that missed                 [1-9][0-9]*$'
    for table in user ads; do
      expect_line "^predictor_demo: republish $table: evict_older_than removed [0-9]+ rows and left [0-9]+, expected"
    done
    expect_line '^  failed calls, sink exceptions          2, 0$'
    ;;
  *)
    fail "unknown fault"
    ;;
esac
[ "$status" -eq "$expected_status" ] || fail "exit status $status, expected $expected_status"
for check in '^  fb303-style and Prometheus registries  agree$' \
  '^  read_hit_rate_stats\(\) windows summed   agree$' \
  "^  hits carrying another id's row         0$" \
  '^  batches counted unlike their hit mask  0$' \
  "^  tables republished, old rows evicted   $republished of 2\$" "^$expected_end\$"; do
  expect_line "$check"
done
if grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer' <<<"$output"; then
  fail "a sanitizer reported an error"
fi
