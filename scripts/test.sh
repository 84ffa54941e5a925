#!/usr/bin/env bash
# Installs what is missing, configures, builds and runs the whole test suite with CTest.
#   scripts/test.sh                                  # the plain build in build/
#   scripts/test.sh --sanitize address,undefined     # build-address-undefined/
#   scripts/test.sh --sanitize thread --only 'logger|curl'   # a subset, by CTest regex
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sanitize=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--sanitize LIST] [--only CTEST_REGEX]" >&2; exit 2 ;;
  esac
done

"$root/scripts/install-deps.sh"

build="$root/build"
build_type=RelWithDebInfo
if [ -n "$sanitize" ]; then
  build="$root/build-${sanitize//,/-}"
  build_type=Debug
fi
jobs="$(nproc)"
extra=()
# Sanitizer builds run tests only: the benchmarks are not built there.
if [ -n "$sanitize" ]; then extra+=(-DSTRIPE_BILLING_BUILD_BENCH=OFF); fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="$build_type" \
  -DSTRIPE_BILLING_SANITIZE="$sanitize" "${extra[@]}" >/dev/null
targets=()
if [ -n "$only" ]; then
  # Only the tests asked for (each test is the executable of the same name; CTest's own
  # dependencies, such as crash_test's child process, come with them).
  mapfile -t targets < <(cd "$root/tests" && ls -- *_test.cc | sed 's/\.cc$//' | grep -E -- "$only" || true)
  if [ ${#targets[@]} -eq 0 ]; then echo "test: no test matches '$only'" >&2; exit 2; fi
fi
if [ ${#targets[@]} -gt 0 ]; then
  cmake --build "$build" -j"$jobs" --target "${targets[@]}"
else
  cmake --build "$build" -j"$jobs"
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
ctest_args=(--test-dir "$build" --output-on-failure -j"$jobs")
if [ -n "$only" ]; then ctest_args+=(-R "$only"); fi
ctest "${ctest_args[@]}"
