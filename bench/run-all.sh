#!/usr/bin/env bash
# Runs every measurement of docs/performance.md RUNS times (default 3, interleaved: pass 1 runs
# everything, then pass 2, ...), takes the median of each number over the runs and prints a
# markdown table with the targets. Raw result lines go to stderr and to $LOG.
#
#   bench/run-all.sh [path/to/stripe-billing-throughput]
#   RUNS=5 LOG=/tmp/bench.log bench/run-all.sh build-bench/bench/stripe-billing-throughput
#
# Every invocation is its own process (the RSS one in particular, so earlier phases do not
# inflate its peak) and is killed after 150 s; the longest normally takes under a minute.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-$here/../build-bench/bench/stripe-billing-throughput}"
RUNS="${RUNS:-3}"
LOG="${LOG:-$(mktemp -t stripe-billing-bench.XXXXXX.log)}"
[ -x "$BIN" ] || { echo "no executable at $BIN (build target stripe-billing-throughput)" >&2; exit 2; }
: > "$LOG"
# The outbox files go to a directory of this script's own, removed at the end even when a run
# is killed by the timeout (the program removes its own directory when it ends normally).
export TMPDIR="$(mktemp -d -t stripe-billing-bench.XXXXXX)"
trap 'rm -rf "$TMPDIR"' EXIT

# name|arguments
MEASUREMENTS=(
  "lat1|latency --threads 1 --events 200000"
  "lat2|latency --threads 2 --events 200000"
  "lat1p|latency --threads 1 --events 100000 --rate 10000"
  "lat2p|latency --threads 2 --events 100000 --rate 10000"
  "async1|intake --durability async --threads 1 --events 1000000"
  "async2|intake --durability async --threads 2 --events 1000000"
  "async1nl|intake --durability async --threads 1 --events 500000 --queue-capacity 500000"
  "sync8|intake --durability sync --threads 8 --events 20000"
  "e2e|end-to-end --customers 1000 --events 50000 --window-ms 1000"
  "e2emeter|end-to-end --customers 1000 --events 50000 --window-ms 1000 --mode meter_events"
  "e2estream|end-to-end --customers 1000 --events 50000 --window-ms 1000 --mode meter_event_stream"
  "e2edual|end-to-end --customers 1000 --events 50000 --window-ms 1000 --mode dual"
  "rss|rss --events 1000000 --rate 25000"
  "rssburst|rss --events 1000000"
  "naive1|naive --threads 1 --events 5000"
  "naive8|naive --threads 8 --events 10000"
)

failures=0
for run in $(seq 1 "$RUNS"); do
  for entry in "${MEASUREMENTS[@]}"; do
    name="${entry%%|*}"
    args="${entry#*|}"
    echo "# run $run/$RUNS: $name: $(basename "$BIN") $args" >&2
    # shellcheck disable=SC2086
    if ! output="$(timeout 150 "$BIN" $args)"; then
      echo "# WARNING: $name run $run exited with an error" >&2
      failures=$((failures + 1))
    fi
    line="$(printf '%s\n' "$output" | grep '^RESULT ' || true)"
    printf '%s\n' "$line" >&2
    [ -n "$line" ] && printf '%s %s\n' "$name" "$line" >> "$LOG"
  done
done

# median NAME KEY: the median of KEY=value over the runs of measurement NAME.
median() {
  awk -v name="$1" -v key="$2" '
    $1 == name { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }
  ' "$LOG" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else print v[int((NR + 1) / 2)] }'
}
# every NAME KEY: all values, in run order (to show the spread).
every() {
  awk -v name="$1" -v key="$2" '
    $1 == name { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) { printf "%s%s", sep, kv[2]; sep = ", " } } }
  ' "$LOG"
}
# calc EXPRESSION: floating point with awk, printed with %s format FMT.
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# met VALUE OP LIMIT
met() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? (v <= l) : (v >= l); print (v == "n/a") ? "n/a" : (ok ? "**met**" : "**missed**") }'; }

lat1_p50=$(median lat1 p50_us);   lat1_p99=$(median lat1 p99_us)
lat2_p50=$(median lat2 p50_us);   lat2_p99=$(median lat2 p99_us)
lat1p_p50=$(median lat1p p50_us); lat1p_p99=$(median lat1p p99_us)
lat2p_p50=$(median lat2p p50_us); lat2p_p99=$(median lat2p p99_us)
async1=$(median async1 accepted_per_s); async2=$(median async2 accepted_per_s)
sync8=$(median sync8 accepted_per_s)
naive1=$(median naive1 events_per_s); naive8=$(median naive8 events_per_s)
naive_p50=$(median naive1 p50_us); naive_p99=$(median naive1 p99_us)
rss=$(median rss peak_rss_mb); rssburst=$(median rssburst peak_rss_mb)

echo
echo "Medians of $RUNS runs; the Runs column lists every run in order. Raw lines: $LOG"
echo
echo "| Measurement | Target | Result (median) | Runs | Met? |"
echo "|---|---|---|---|---|"
echo "| \`log_success_event\` p50 / p99, 1 thread, unpaced (overloaded) | p99 ≤ 5 µs | $lat1_p50 / $lat1_p99 µs | p99: $(every lat1 p99_us) | $(met "$lat1_p99" "<=" 5) |"
echo "| \`log_success_event\` p50 / p99, 2 threads, unpaced (overloaded) | p99 ≤ 5 µs | $lat2_p50 / $lat2_p99 µs | p99: $(every lat2 p99_us) | $(met "$lat2_p99" "<=" 5) |"
echo "| \`log_success_event\` p50 / p99, 1 thread, 10,000 calls/s | p99 ≤ 5 µs | $lat1p_p50 / $lat1p_p99 µs | p99: $(every lat1p p99_us) | $(met "$lat1p_p99" "<=" 5) |"
echo "| \`log_success_event\` p50 / p99, 2 threads, 10,000 calls/s each | p99 ≤ 5 µs | $lat2p_p50 / $lat2p_p99 µs | p99: $(every lat2p p99_us) | $(met "$lat2p_p99" "<=" 5) |"
echo "| Accepted into the outbox, async, 1 producer thread | ≥ 100,000/s | $async1 /s (lost $(median async1 lost) of 1,000,000) | $(every async1 accepted_per_s) | $(met "$async1" ">=" 100000) |"
echo "| Accepted into the outbox, async, 2 producer threads | ≥ 100,000/s | $async2 /s (lost $(median async2 lost) of 1,000,000) | $(every async2 accepted_per_s) | $(met "$async2" ">=" 100000) |"
echo "| Accepted into the outbox, async, 1 thread, 500,000 events with a queue that holds them all (no shedding) | ≥ 100,000/s | $(median async1nl accepted_per_s) /s (lost $(median async1nl lost)) | $(every async1nl accepted_per_s) | $(met "$(median async1nl accepted_per_s)" ">=" 100000) |"
echo "| Accepted into the outbox, sync, 8 producer threads | (report) | $sync8 /s | $(every sync8 accepted_per_s) | — |"
echo "| End to end, 1,000 customers, 50,000 events, window 1 s: delivered | (report) | $(median e2e delivered_per_s) events/s | $(every e2e delivered_per_s) | — |"
echo "| End to end: Stripe requests per 1,000 events (all / usage records / lookups) | (report) | $(median e2e requests_per_1k) / $(median e2e usage_posts_per_1k) / $(median e2e lookups_per_1k) | $(every e2e requests_per_1k) | — |"
echo
echo "End to end per billing mode (1,000 customers, 50,000 calls, window 1 s; \"calls/s\" is calls over the time until every row is delivered):"
echo
echo "| Mode | Calls/s (median) | Runs | Requests per 1,000 calls: all / usage records / v1 meter events / v2 stream / lookups and sessions | Billed correctly |"
echo "|---|---|---|---|---|"
for m in e2e e2emeter e2estream e2edual; do
  echo "| $(median $m mode) | $(median $m events_per_s) | $(every $m events_per_s) | $(median $m requests_per_1k) / $(median $m usage_posts_per_1k) / $(median $m meter_posts_per_1k) / $(median $m stream_posts_per_1k) / $(median $m lookups_per_1k) | $(every $m usage_correct) |"
done
echo "| Peak RSS, 1,000,000 pending, arriving at 25,000/s | ≤ 64 MB | $rss MB (pending $(median rss pending)) | $(every rss peak_rss_mb) | $(met "$rss" "<=" 64) |"
echo "| Peak RSS, 1,000,000 offered in one unthrottled burst | ≤ 64 MB | $rssburst MB (pending $(median rssburst pending), lost $(median rssburst lost)) | $(every rssburst peak_rss_mb) | $(met "$rssburst" "<=" 64) |"
echo "| Naive: synchronous POST per event, 1 thread: p50 / p99 | — | $naive_p50 / $naive_p99 µs | p99: $(every naive1 p99_us) | — |"
echo "| Naive: events/s, 1 thread / 8 threads | — | $naive1 / $naive8 /s | $(every naive1 events_per_s) / $(every naive8 events_per_s) | — |"
echo
echo "| Ratio (library vs naive) | Value |"
echo "|---|---|"
echo "| Latency p50, 1 thread: naive ÷ library (unpaced / 10,000 calls/s) | $(calc '%.0f×' "$naive_p50 / $lat1_p50") / $(calc '%.0f×' "$naive_p50 / $lat1p_p50") |"
echo "| Latency p99, 1 thread: naive ÷ library (unpaced / 10,000 calls/s) | $(calc '%.0f×' "$naive_p99 / $lat1_p99") / $(calc '%.0f×' "$naive_p99 / $lat1p_p99") |"
echo "| Throughput, 1 thread: library async accepted/s ÷ naive events/s | $(calc '%.1f×' "$async1 / $naive1") |"
echo "| Throughput, caller waits for durability, 8 threads: library sync ÷ naive | $(calc '%.2f×' "$sync8 / $naive8") |"
if [ "$failures" -gt 0 ]; then
  echo
  echo "WARNING: $failures invocation(s) exited with an error; see $LOG and stderr."
fi
