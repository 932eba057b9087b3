#!/usr/bin/env bash
# predictor_demo on a faulty library: a test shim that hands out the real
# library's table with cache_batch_set wrapped. The run must end with FAILED
# and exit status 1 for that fault alone, its other checks passing. The
# sanitizers also exit 1 by default, after the summary: their reports fail the
# check too.
#
# usage: faulty_library_check.sh DEMO SHIM FAULT
#   FAULT republish-error  cpp_tests/failing_republish_shim.c: publishes after
#                          the first version are refused; each table's
#                          republish must be reported and counted
#   FAULT lost-rows        cpp_tests/half_publish_shim.c: each publish stores
#                          half its rows and reports success; the stored ids
#                          that then miss must be counted, and each republish
#                          that ends in time fails its eviction's count
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
[ "$status" -eq 1 ] || fail "exit status $status, expected 1"
case $fault in
  republish-error)
    for table in user ads; do
      expect_line "^predictor_demo: republish $table: INVALID_ARGUMENT: .*rows_len [0-9]+ < n \\* row_bytes"
    done
    expect_line '^  failed calls, sink exceptions          2, 0$'
    expect_line '^  stored ids that missed                 0$'
    ;;
  lost-rows)
    expect_line '^  stored ids that missed                 [1-9][0-9]*$'
    evictions_miscounted=$(grep -Ec '^predictor_demo: republish [a-z]+: evict_older_than removed [0-9]+ rows and left [0-9]+, expected' <<<"$output")
    expect_line "^  failed calls, sink exceptions          $evictions_miscounted, 0\$"
    ;;
  *)
    fail "unknown fault"
    ;;
esac
for check in '^  fb303-style and Prometheus registries  agree$' \
  '^  read_hit_rate_stats\(\) windows summed   agree$' \
  "^  hits carrying another id's row         0$" \
  '^  batches counted unlike their hit mask  0$' '^FAILED$'; do
  expect_line "$check"
done
if grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer' <<<"$output"; then
  fail "a sanitizer reported an error"
fi
