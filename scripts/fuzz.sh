#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang in build-fuzz/ and runs each for a while,
# two at a time, on a scratch copy of its seed corpus (the repository is never written to).
# Prints one line per target with its executions; exits 1 if any target crashed, leaked, timed
# out or ran out of memory (the input and the log are kept in the scratch directory, printed).
#   scripts/fuzz.sh                       # 60 s per target (or FUZZ_SECONDS)
#   scripts/fuzz.sh --seconds 300 --only config_yaml
# Installs what is missing (the build's packages, clang, libFuzzer); needs root or sudo for that.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--only TARGET]" >&2; exit 2 ;;
  esac
done
case "$seconds" in '' | *[!0-9]*) echo "fuzz: --seconds wants a whole number, got '$seconds'" >&2; exit 2 ;; esac
targets=(usage_event config_yaml config_env stripe_response request_builders webhook)
if [ -n "$only" ]; then
  case " ${targets[*]} " in *" $only "*) targets=("$only") ;;
    *) echo "fuzz: unknown target '$only'; the targets are ${targets[*]}" >&2; exit 2 ;; esac
fi

"$root/scripts/install-deps.sh"
fuzz_packages=(clang libclang-rt-14-dev llvm-14)  # llvm-14: llvm-symbolizer, for readable stacks
missing=()
for p in "${fuzz_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build="$root/build-fuzz"
jobs=2
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTRIPE_BILLING_FUZZ=ON -DBUILD_SHARED_LIBS=OFF -DSTRIPE_BILLING_SANITIZE= \
  -DSTRIPE_BILLING_BUILD_TESTS=OFF -DSTRIPE_BILLING_BUILD_EXAMPLES=OFF \
  -DSTRIPE_BILLING_BUILD_EMULATOR=OFF -DSTRIPE_BILLING_BUILD_TOOLS=OFF \
  -DSTRIPE_BILLING_BUILD_BENCH=OFF -DSTRIPE_BILLING_INSTALL=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}")

scratch="$(mktemp -d "${TMPDIR:-/tmp}/stripe-billing-fuzz.XXXXXX")"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:symbolize=1"
if command -v llvm-symbolizer >/dev/null; then export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer)"; fi

# Runs one target; its results land in $scratch/<target>/ (log, status, crash-* artifacts).
run_target() {
  local name="$1" dir="$scratch/$1"
  mkdir -p "$dir/corpus"
  cp -R "$root/tests/fuzz/corpus/$name/." "$dir/corpus/"
  local args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1
              -artifact_prefix="$dir/")
  if [ -f "$root/tests/fuzz/dict/$name.dict" ]; then args+=(-dict="$root/tests/fuzz/dict/$name.dict"); fi
  local status=0
  (cd "$dir" && "$build/tests/fuzz/fuzz_$name" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1) || status=$?
  echo "$status" >"$dir/status"
}

echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $jobs at a time, in $scratch"
for name in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_target "$name" &
done
wait

failed=0
for name in "${targets[@]}"; do
  dir="$scratch/$name"
  status="$(cat "$dir/status" 2>/dev/null || echo 1)"
  executions="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$dir/log" | tail -1)"
  artifacts="$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
    -name 'timeout-*' -o -name 'oom-*' \) | sort)"
  if [ "$status" -eq 0 ] && [ -z "$artifacts" ]; then
    printf 'fuzz: %-17s ok      %s executions in %s s\n' "$name" "${executions:-?}" "$seconds"
    continue
  fi
  failed=1
  printf 'fuzz: %-17s FAILED  %s executions, exit %s, log %s\n' "$name" "${executions:-?}" \
    "$status" "$dir/log"
  grep -E '^==fuzz==|^SUMMARY:|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:' \
    "$dir/log" | head -5 | sed 's/^/      /' || true
  for artifact in $artifacts; do
    echo "      input $artifact (hex, first 256 bytes):"
    head -c 256 "$artifact" | od -An -tx1 -v | sed 's/^ */        /'
  done
done
if [ "$failed" -eq 0 ]; then rm -rf "$scratch"; else echo "fuzz: inputs and logs kept in $scratch"; fi
exit "$failed"
