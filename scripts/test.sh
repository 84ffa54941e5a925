#!/usr/bin/env bash
# Installs what is missing, configures, builds and runs the whole test suite with CTest.
#   scripts/test.sh                                  # the plain build in build/
#   scripts/test.sh --sanitize address,undefined     # build-address-undefined/
#   scripts/test.sh --sanitize thread --only 'logger|curl'   # a subset, by CTest regex
#   scripts/test.sh --no-postgres                    # tests needing PostgreSQL report skipped
# Tests needing PostgreSQL connect to $STRIPE_TEST_PG_URL. When it is unset, a throwaway server
# (scripts/pg-cluster.sh) runs for the duration of CTest and is removed on exit, Ctrl-C included.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sanitize=""
only=""
postgres=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --no-postgres) postgres=0; shift ;;
    *) echo "usage: $0 [--sanitize LIST] [--only CTEST_REGEX] [--no-postgres]" >&2; exit 2 ;;
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
# PostgreSQL for the tests that need it: the one $STRIPE_TEST_PG_URL names, else a throwaway one.
pg_dir=""
stop_pg() {
  local rc=$?
  if [ -n "$pg_dir" ]; then "$root/scripts/pg-cluster.sh" stop "$pg_dir" >/dev/null || rc=1; fi
  exit "$rc"
}
if [ "$postgres" -eq 0 ]; then
  unset STRIPE_TEST_PG_URL
  echo "test: --no-postgres: tests needing PostgreSQL will be reported as skipped" >&2
elif [ -n "${STRIPE_TEST_PG_URL:-}" ]; then
  echo "test: PostgreSQL at $STRIPE_TEST_PG_URL (from STRIPE_TEST_PG_URL)" >&2
elif ! "$root/scripts/pg-cluster.sh" bindir >/dev/null; then
  echo "test: no PostgreSQL binaries (initdb, pg_ctl, postgres): tests needing PostgreSQL will be reported as skipped" >&2
else
  trap stop_pg EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  pg_dir="$(mktemp -d -t stripe-pg.XXXXXX)"
  if ! STRIPE_TEST_PG_URL="$("$root/scripts/pg-cluster.sh" start "$pg_dir")"; then
    echo "test: could not start a throwaway PostgreSQL (above); --no-postgres runs without it" >&2
    exit 1
  fi
  export STRIPE_TEST_PG_URL
  echo "test: PostgreSQL at $STRIPE_TEST_PG_URL (throwaway, in $pg_dir)" >&2
fi
ctest_args=(--test-dir "$build" --output-on-failure -j"$jobs")
if [ -n "$only" ]; then ctest_args+=(-R "$only"); fi
ctest "${ctest_args[@]}"
