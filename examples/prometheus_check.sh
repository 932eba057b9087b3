#!/usr/bin/env bash
# The predictor demo's /metrics, end to end: runs the demo with its server on
# a free loopback port, scrapes it with curl while traffic runs and again
# after it stopped (the demo keeps serving for --linger), has promtool check
# both scrapes, and compares the final one exactly with the summary the demo
# printed from each cache's cumulative_read_stats() and cache info. The
# counters on /metrics come from the sink-fed registry, the summary straight
# from the library, so agreement means no batch was lost or counted twice
# on the way.
#
# usage: prometheus_check.sh DEMO HTTP PROMTOOL CURL
#   HTTP is ON when DEMO was built with cpp-httplib; a missing piece makes
#   the test exit 77, which ctest reports as skipped, or fail where
#   KVZCH_REQUIRE_METRICS_CHECK=1 says the pieces were installed (.ci/run).
set -euo pipefail

demo=$1 http=$2 promtool=$3 curl=$4

skip() {
  if [ "${KVZCH_REQUIRE_METRICS_CHECK:-0}" = 1 ]; then
    echo "FAIL: KVZCH_REQUIRE_METRICS_CHECK=1, yet $*" >&2
    exit 1
  fi
  echo "SKIPPED: $*"
  exit 77
}
[ "$http" = ON ] || skip "predictor_demo was built without cpp-httplib (Debian: libcpp-httplib-dev)"
[ -x "$promtool" ] || skip "promtool not found (Debian: prometheus)"
[ -x "$curl" ] || skip "curl not found (Debian: curl)"

work=$(mktemp -d)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -KILL "$demo_pid"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "--- demo output" >&2
  cat "$work/out" >&2
  exit 1
}

tables=(user item ads)
"$demo" --metrics-port 0 --linger 60 --duration 8 --threads 2 \
  --table user:20000:256 --table item:10000:128 --table ads:5000:64 >"$work/out" 2>&1 &
demo_pid=$!

# Waits up to 60 s for a line of the demo's output matching the regex $1.
wait_for() {
  local _
  for _ in $(seq 600); do
    grep -q -- "$1" "$work/out" && return 0
    kill -0 "$demo_pid" 2>/dev/null || fail "the demo exited before printing /$1/"
    sleep 0.1
  done
  fail "the demo printed no /$1/ within 60 s"
}

wait_for '^metrics: serving http://127\.0\.0\.1:[0-9]*/metrics$'
port=$(sed -n 's|^metrics: serving http://127\.0\.0\.1:\([0-9]*\)/metrics$|\1|p' "$work/out")
url="http://127.0.0.1:$port/metrics"

# Scrapes into $1.
scrape() {
  "$curl" -fsS --max-time 10 -D "$1.headers" -o "$1" "$url" || fail "curl $url failed"
  grep -qi '^content-type: text/plain; version=0\.0\.4' "$1.headers" ||
    fail "$url answered with $(grep -i '^content-type' "$1.headers")"
}

# Has promtool check the scrape $1 (format and lint).
lint() {
  "$promtool" check metrics <"$1" || fail "promtool check metrics rejected this scrape:
$(cat "$1")"
}

# The value of the sample $2 (name and labels, as written) in the scrape $1.
value() {
  awk -v sample="$2" '$1 == sample { print $2; found = 1 } END { exit !found }' "$1" ||
    fail "no sample $2 in the scrape:
$(cat "$1")"
}

counter() { value "$1" "kvzch_inference_read_$2_count_total{table=\"$3\"}"; }

# While traffic runs: after the first status line, before the summary.
wait_for 'M rows/s'
# Whether traffic still ran is asked as soon as the scrape is in, before
# promtool (a Go binary starting on a busy machine) takes its time.
scrape "$work/live"
if grep -q '^summary' "$work/out"; then
  fail "traffic ended before the live scrape; the test needs a longer --duration"
fi
lint "$work/live"
# (PrometheusReadStats writes total as the hits plus misses it read, so that
# one scrape adds up: checking that here would check nothing.)
for t in "${tables[@]}"; do
  [ "$(counter "$work/live" total "$t")" -gt 0 ] || fail "live scrape, $t: no lookups counted yet"
done

# After traffic: the final counts, which the demo has printed.
wait_for '^metrics: traffic stopped'
scrape "$work/final"
lint "$work/final"
kill -TERM "$demo_pid"
status=0
wait "$demo_pid" || status=$?
demo_pid=
[ "$status" -eq 0 ] || fail "the demo exited with status $status"
grep -qx 'OK' "$work/out" || fail "the demo did not print OK"

for t in "${tables[@]}"; do
  # summary columns: table bytes rows MiB batches lookups hits misses hit% p50us p99us
  row=$(awk -v t="$t" '$1 == t && NF == 11 { line = $0 } END { print line }' "$work/out")
  [ -n "$row" ] || fail "no summary row for $t"
  read -r _ _ rows _ batches lookups hits misses _ <<<"$row"
  check() {
    [ "$2" = "$3" ] || fail "$t: $1 is $2 on /metrics but $3 in the demo's summary"
    echo "$t: $1 $2"
  }
  check hits "$(counter "$work/final" hit "$t")" "$hits"
  check misses "$(counter "$work/final" miss "$t")" "$misses"
  check lookups "$(counter "$work/final" total "$t")" "$lookups"
  check batches \
    "$(value "$work/final" "kvzch_inference_batch_duration_seconds_count{table=\"$t\"}")" "$batches"
  check rows "$(value "$work/final" "kvzch_cache_rows{table=\"$t\"}")" "$rows"
  for kind in hit miss total; do
    live=$(counter "$work/live" "$kind" "$t")
    [ "$live" -le "$(counter "$work/final" "$kind" "$t")" ] ||
      fail "$t: the $kind counter went down"
  done
done
echo "PASS: /metrics passes promtool and agrees exactly with cumulative_read_stats()"
