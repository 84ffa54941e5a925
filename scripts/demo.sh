#!/usr/bin/env bash
# The end-to-end demo from a fresh clone: installs what is missing, builds the gateway, the
# Stripe emulator and the demo (in build/, or $BUILD_DIR), then runs the demo and exits with its
# status: 0 when Stripe recorded exactly the tokens the gateway served to each user.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target stripe-billing-demo stripe-gateway stripe-emulator
exec "$build/examples/stripe-billing-demo" \
  --emulator "$build/emulator/stripe-emulator" \
  --gateway "$build/examples/stripe-gateway"
