#!/usr/bin/env bash
# The fleet measurements of docs/performance.md ("A fleet on PostgreSQL"): intake into PostgreSQL
# and end to end with 1 and 3 replicas on one store beside 3 replicas with SQLite files of their
# own, RUNS times each (default 3). Starts a throwaway PostgreSQL (scripts/pg-cluster.sh) unless
# PG_URL names one; prints the RESULT lines.
#
#   bench/run-fleet.sh [path/to/stripe-billing-throughput]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${1:-$here/../build-bench/bench/stripe-billing-throughput}"
RUNS="${RUNS:-3}"
[ -x "$BIN" ] || { echo "no executable at $BIN (build target stripe-billing-throughput)" >&2; exit 2; }
export TMPDIR="$(mktemp -d -t stripe-billing-bench.XXXXXX)"
pg_dir=""
cleanup() {
  if [ -n "$pg_dir" ]; then "$here/../scripts/pg-cluster.sh" stop "$pg_dir" >/dev/null || true; fi
  rm -rf "$TMPDIR"
}
trap cleanup EXIT
url="${PG_URL:-}"
if [ -z "$url" ]; then
  pg_dir="$(mktemp -d -t stripe-pg.XXXXXX)"
  url="$("$here/../scripts/pg-cluster.sh" start "$pg_dir")"
fi
for run in $(seq "$RUNS"); do
  "$BIN" intake --durability sync --threads 64 --events 200000 --outbox-url "$url" | grep RESULT
  "$BIN" intake --durability sync --threads 8 --events 60000 --outbox-url "$url" | grep RESULT
  "$BIN" intake --durability async --threads 1 --events 500000 --queue-capacity 500000 \
    --outbox-url "$url" | grep RESULT
done
for run in $(seq "$RUNS"); do
  for replicas in "--replicas 1 --outbox-url $url" "--replicas 3 --outbox-url $url" "--replicas 3"; do
    # shellcheck disable=SC2086
    timeout 300 "$BIN" end-to-end --customers 1000 --events 20000 --window-ms 1000 --rate 200 \
      $replicas | grep RESULT
  done
done
