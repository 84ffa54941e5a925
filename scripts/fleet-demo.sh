#!/usr/bin/env bash
# The fleet demo from a fresh clone: installs what is missing, builds the gateway, the Stripe
# emulator and the demo (in build/, or $BUILD_DIR), starts a throwaway PostgreSQL server
# (scripts/pg-cluster.sh, stopped again however this script ends), then runs three gateway
# replicas on it as one fleet, SIGKILLs one mid-run and exits with the demo's status: 0 when
# Stripe recorded exactly the tokens the surviving fleet served to each user. Arguments go to
# stripe-billing-demo (e.g. --rounds 5, --settle-s 120).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target stripe-billing-demo stripe-gateway stripe-emulator

pg_dir="$(mktemp -d)"
# shellcheck disable=SC2317  # run by the trap
stop_pg() { "$root/scripts/pg-cluster.sh" stop "$pg_dir" || true; }
trap stop_pg EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
outbox_url="$("$root/scripts/pg-cluster.sh" start "$pg_dir")"

status=0
"$build/examples/stripe-billing-demo" \
  --emulator "$build/emulator/stripe-emulator" \
  --gateway "$build/examples/stripe-gateway" \
  --fleet 3 --outbox-url "$outbox_url" "$@" || status=$?
exit "$status"
