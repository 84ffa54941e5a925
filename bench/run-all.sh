#!/usr/bin/env bash
# Runs every measurement of docs/performance.md RUNS times (default 3, interleaved: pass 1 runs
# everything, then pass 2, ...), takes the median of each number over the runs and prints a
# markdown table with the targets. Raw result lines go to stderr and to $LOG.
#
#   bench/run-all.sh [path/to/stripe-billing-throughput]
#   (the gateway's measurements, gw*, run stripe-billing-gateway-bench from beside it, or $GATEWAY_BIN;
#   without it they show as n/a)
#   RUNS=5 LOG=/tmp/bench.log bench/run-all.sh build-bench/bench/stripe-billing-throughput
#   ONLY='lat1p|lat1pt|e2etok' bench/run-all.sh   # only the measurements whose name matches
#                                                 # (an extended regex, anchored); the others
#                                                 # show as n/a
#
# Every invocation is its own process (the RSS one in particular, so earlier phases do not
# inflate its peak) and is killed after 150 s; the longest normally takes under a minute.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-$here/../build-bench/bench/stripe-billing-throughput}"
RUNS="${RUNS:-3}"
LOG="${LOG:-$(mktemp -t stripe-billing-bench.XXXXXX.log)}"
[ -x "$BIN" ] || { echo "no executable at $BIN (build target stripe-billing-throughput)" >&2; exit 2; }
GATEWAY_BIN="${GATEWAY_BIN:-$(dirname "$BIN")/stripe-billing-gateway-bench}"
: > "$LOG"
# The outbox files go to a directory of this script's own, removed at the end even when a run
# is killed by the timeout (the program removes its own directory when it ends normally).
export TMPDIR="$(mktemp -d -t stripe-billing-bench.XXXXXX)"
trap 'rm -rf "$TMPDIR"' EXIT

# name|arguments
MEASUREMENTS=(
  "fsync|fsync --samples 2000"
  "pagefault|page-fault --pages 32768"
  "lat1|latency --threads 1 --events 200000"
  "lat2|latency --threads 2 --events 200000"
  "lat1p|latency --threads 1 --events 100000 --rate 10000"
  "lat2p|latency --threads 2 --events 100000 --rate 10000"
  "async1|intake --durability async --threads 1 --events 1000000"
  "async1nl|intake --durability async --threads 1 --events 500000 --queue-capacity 500000"
  "sync8|intake --durability sync --threads 8 --events 60000"
  "sync64|intake --durability sync --threads 64 --events 200000"
  "e2e|end-to-end --customers 1000 --events 50000 --window-ms 1000"
  "e2emeter|end-to-end --customers 1000 --events 50000 --window-ms 1000 --mode meter_events"
  "e2estream|end-to-end --customers 1000 --events 50000 --window-ms 1000 --mode meter_event_stream"
  "e2edual|end-to-end --customers 1000 --events 50000 --window-ms 1000 --mode dual"
  "lat1pt|latency --threads 1 --events 100000 --rate 10000 --preset token_billing"
  "lat2pt|latency --threads 2 --events 100000 --rate 10000 --preset token_billing"
  "e2etok|end-to-end --customers 1000 --events 20000 --window-ms 1000 --preset token_billing"
  "e2etokstream|end-to-end --customers 1000 --events 50000 --window-ms 1000 --preset token_billing --mode meter_event_stream"
  "thrmeter|throttle --mode meter_events --rate 25 --seconds 60 --warmup 10 --throttle-permille 50"
  "thrdual|throttle --mode dual --rate 25 --seconds 60 --warmup 10 --throttle-permille 50"
  "limit|throttle --mode meter_events --rate 100 --seconds 60 --warmup 15 --throttle-permille 0 --true-limit 50"
  "ledger|ledger --rows 1000000 --calls 5000"
  "rss|rss --events 1000000 --rate 25000"
  "rssburst|rss --events 1000000"
  "naive1|naive --threads 1 --events 5000"
  "naive8|naive --threads 8 --events 10000"
  # The example gateway over HTTP, admission off and on (GATEWAY_BIN; docs/performance.md,
  # "Admission").
  "gwoff|gateway: --admission off --clients 4 --requests 20000"
  "gwstatic|gateway: --admission static --clients 4 --requests 20000"
)

failures=0
for run in $(seq 1 "$RUNS"); do
  for entry in "${MEASUREMENTS[@]}"; do
    name="${entry%%|*}"
    args="${entry#*|}"
    if [ -n "${ONLY:-}" ] && ! [[ "$name" =~ ^(${ONLY})$ ]]; then continue; fi
    bin="$BIN"
    if [[ "$args" == "gateway: "* ]]; then
      bin="$GATEWAY_BIN"
      args="${args#gateway: }"
      if [ ! -x "$bin" ]; then
        echo "# skipped $name: no executable at $bin (build target stripe-billing-gateway-bench)" >&2
        continue
      fi
    fi
    echo "# run $run/$RUNS: $name: $(basename "$bin") $args" >&2
    # shellcheck disable=SC2086
    if ! output="$(timeout 150 "$bin" $args)"; then
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
async1=$(median async1 accepted_per_s); async1nl=$(median async1nl accepted_per_s)
sync8=$(median sync8 accepted_per_s); sync64=$(median sync64 accepted_per_s)
naive1=$(median naive1 events_per_s); naive8=$(median naive8 events_per_s)
naive_p50=$(median naive1 p50_us); naive_p99=$(median naive1 p99_us)
rss=$(median rss peak_rss_mb); rssburst=$(median rssburst peak_rss_mb)

echo
echo "Medians of $RUNS runs; the Runs column lists every run in order. Raw lines: $LOG"
echo
echo "| Measurement | Target | Result (median) | Runs | Met? |"
echo "|---|---|---|---|---|"
echo "| \`log_success_event\` p99, async, 1 thread, 10,000 calls/s | p99 ≤ 2 µs | $lat1p_p50 / $lat1p_p99 µs (p50 / p99) | p99: $(every lat1p p99_us) | $(met "$lat1p_p99" "<=" 2) |"
echo "| \`log_success_event\` p99, async, 2 threads, 10,000 calls/s each | p99 ≤ 2 µs | $lat2p_p50 / $lat2p_p99 µs | p99: $(every lat2p p99_us) | $(met "$lat2p_p99" "<=" 2) |"
echo "| The same, 1 thread, 10,000 calls/s: the first call after each pacing pause (1 in 100) p50 / p99; every other call's p99 | (report) | $(median lat1p after_pause_p50_us) / $(median lat1p after_pause_p99_us) µs; $(median lat1p others_p99_us) µs | others p99: $(every lat1p others_p99_us) | — |"
echo "| \`log_success_event\` p99, async, 1 / 2 threads, unpaced (overloaded) | (report) | $lat1_p99 / $lat2_p99 µs | $(every lat1 p99_us) / $(every lat2 p99_us) | — |"
echo "| Accepted into the outbox, async, 1 producer, nothing shed (500,000 events, queue holds them all) | ≥ 250,000/s | $async1nl /s (lost $(median async1nl lost)) | $(every async1nl accepted_per_s) | $(met "$async1nl" ">=" 250000) |"
echo "| Accepted into the outbox, async, 1 producer, 1,000,000 offered flat out (queue 100,000: sheds) | (report) | $async1 /s (lost $(median async1 lost)) | $(every async1 accepted_per_s) | — |"
echo "| Sync, 8 callers | ≥ 10,000/s | $sync8 /s ($(median sync8 events_per_commit) events per commit) | $(every sync8 accepted_per_s) | $(met "$sync8" ">=" 10000) |"
echo "| Sync, 64 callers | ≥ 50,000/s | $sync64 /s ($(median sync64 events_per_commit) events per commit) | $(every sync64 accepted_per_s) | $(met "$sync64" ">=" 50000) |"
echo "| A sync call's own latency, 8 / 64 callers: p50 / p99 | (report) | $(median sync8 call_p50_us) / $(median sync8 call_p99_us) µs; $(median sync64 call_p50_us) / $(median sync64 call_p99_us) µs | p99: $(every sync8 call_p99_us) / $(every sync64 call_p99_us) | — |"
echo "| A page fault (first write to a fresh page): p50 / p99 | (report) | $(median pagefault p50_us) / $(median pagefault p99_us) µs | p50: $(every pagefault p50_us) | — |"
echo "| The disk's fdatasync (4 KB overwrite): p50 / p99 | (report) | $(median fsync p50_us) / $(median fsync p99_us) µs | p99: $(every fsync p99_us) | — |"
echo "| 1,000,000 delivered rows, stats() every 10 ms: stats() p99 / a sync call's p99 | (report) | $(median ledger stats_p99_us) / $(median ledger call_p99_us) µs | $(every ledger stats_p99_us) / $(every ledger call_p99_us) | — |"
echo "| Peak RSS, 1,000,000 pending, arriving at 25,000/s | ≤ 64 MB | $rss MB (pending $(median rss pending)) | $(every rss peak_rss_mb) | $(met "$rss" "<=" 64) |"
echo "| Peak RSS, 1,000,000 offered in one unthrottled burst | ≤ 64 MB | $rssburst MB (pending $(median rssburst pending), lost $(median rssburst lost)) | $(every rssburst peak_rss_mb) | $(met "$rssburst" "<=" 64) |"
echo
echo "Stripe's 429s (test mode, configured rate 25/s unless said; 20 customers; calls offered at 1.5× what the rate carries; measured after the warm-up):"
echo
echo "| Run | Target | Accepted by Stripe | Runs | Per kind (usage records / meter events) | Client rate: mean / lowest | Met? |"
echo "|---|---|---|---|---|---|---|"
echo "| meter_events, 5 % random throttling 429s | ≥ 50 % of 25/s | $(median thrmeter accepted_per_s)/s ($(median thrmeter accepted_share) of the rate) | $(every thrmeter accepted_share) | — / $(median thrmeter meter_events_per_s) | $(median thrmeter client_rate_mean) / $(median thrmeter client_rate_min) | $(met "$(median thrmeter accepted_share)" ">=" 0.5) |"
echo "| dual, 5 % random throttling 429s | ≥ 50 % of 25/s, no kind starves | $(median thrdual accepted_per_s)/s ($(median thrdual accepted_share) of the rate) | $(every thrdual accepted_share) | $(median thrdual usage_records_per_s) / $(median thrdual meter_events_per_s) | $(median thrdual client_rate_mean) / $(median thrdual client_rate_min) | $(met "$(median thrdual accepted_share)" ">=" 0.5) |"
echo "| meter_events, configured 100/s, Stripe's true limit 50/s | client within 20 % of 50/s, never below 25/s | $(median limit accepted_per_s)/s | client mean: $(every limit client_rate_mean) | — / $(median limit meter_events_per_s) | $(median limit client_rate_mean) / $(median limit client_rate_min) | $(awk -v m="$(median limit client_mean_share)" -v l="$(median limit client_min_share)" 'BEGIN { print (m >= 0.8 && m <= 1.2 && l >= 0.5) ? "**met**" : "**missed**" }') |"
echo
echo "End to end per billing mode (1,000 customers, 50,000 calls, window 1 s; \"calls/s\" is calls over the time until every row is delivered):"
echo
echo "| Mode | Calls/s (median) | Runs | Requests per 1,000 calls: all / usage records / v1 meter events / v2 stream / lookups and sessions | Billed correctly |"
echo "|---|---|---|---|---|"
for m in e2e e2emeter e2estream e2edual; do
  echo "| $(median $m mode) | $(median $m events_per_s) | $(every $m events_per_s) | $(median $m requests_per_1k) / $(median $m usage_posts_per_1k) / $(median $m meter_posts_per_1k) / $(median $m stream_posts_per_1k) / $(median $m lookups_per_1k) | $(every $m usage_correct) |"
done
echo
echo "Token-billing preset (STRIPE_PRESET=token_billing; every call carries every token detail and bills four token types: input, cache_read, cache_write, output):"
echo
echo "| Measurement | Target | Result (median) | Runs | Met? |"
echo "|---|---|---|---|---|"
echo "| \`log_success_event\` p99, async, token details, 1 thread, 10,000 calls/s | p99 ≤ 5 µs | $(median lat1pt p50_us) / $(median lat1pt p99_us) µs (p50 / p99); plain event: $lat1p_p50 / $lat1p_p99 µs | p99: $(every lat1pt p99_us) | $(met "$(median lat1pt p99_us)" "<=" 5) |"
echo "| \`log_success_event\` p99, async, token details, 2 threads, 10,000 calls/s each | p99 ≤ 5 µs | $(median lat2pt p50_us) / $(median lat2pt p99_us) µs; plain event: $lat2p_p50 / $lat2p_p99 µs | p99: $(every lat2pt p99_us) | $(met "$(median lat2pt p99_us)" "<=" 5) |"
echo
echo "| Mode (token-billing preset) | Calls/s (median) | Rows (meter events) delivered/s | Runs (calls/s) | Requests per 1,000 calls: all / v2 meter events / v2 stream / lookups and sessions | Billed correctly |"
echo "|---|---|---|---|---|---|"
for m in e2etok e2etokstream; do
  echo "| $(median $m mode) ($(median $m events) calls) | $(median $m events_per_s) | $(median $m delivered_per_s) | $(every $m events_per_s) | $(median $m requests_per_1k) / $(median $m v2_event_posts_per_1k) / $(median $m stream_posts_per_1k) / $(median $m lookups_per_1k) | $(every $m usage_correct) |"
done
echo
echo "The example gateway over HTTP (echo model, 4 keep-alive clients, 20,000 calls; Stripe unreachable); admission static with a budget never spent:"
echo
echo "| Admission | Calls/s (median) | Runs | Client latency p50 / p99 | Admitted / refused |"
echo "|---|---|---|---|---|"
for m in gwoff gwstatic; do
  echo "| $(median $m admission) | $(median $m calls_per_s) | $(every $m calls_per_s) | $(median $m p50_us) / $(median $m p99_us) µs | $(median $m admissions) / $(median $m denials) |"
done
gw_off=$(median gwoff calls_per_s); gw_static=$(median gwstatic calls_per_s)
if [ "$gw_off" != "n/a" ] && [ "$gw_static" != "n/a" ]; then
  echo "| static ÷ off | $(calc '%.3f' "$gw_static / $gw_off") | | | |"
fi
echo
echo "| Baseline: one synchronous POST per event on the caller's thread | Value |"
echo "|---|---|"
echo "| Naive latency p50 / p99, 1 thread | $naive_p50 / $naive_p99 µs |"
echo "| Naive events/s, 1 thread / 8 threads | $naive1 / $naive8 |"
echo "| Latency p50, 1 thread, 10,000 calls/s: naive ÷ library (async) | $(calc '%.0f×' "$naive_p50 / $lat1p_p50") |"
echo "| Durable events/s with 8 callers: library sync ÷ naive | $(calc '%.1f×' "$sync8 / $naive8") |"
if [ "$failures" -gt 0 ]; then
  echo
  echo "WARNING: $failures invocation(s) exited with an error; see $LOG and stderr."
fi
