#!/usr/bin/env bash
# Formats the C++ sources with the committed .clang-format (clang-format from Debian), or, with
# --check, lists the files that are not formatted and exits 1.
#   scripts/format.sh            # rewrite in place
#   scripts/format.sh --check    # CI
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v clang-format >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends clang-format >/dev/null
fi
cd "$root"
mapfile -t files < <(git ls-files -- '*.cc' '*.h' | grep -v '^tests/fuzz/corpus/')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for file in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$file" >/dev/null 2>&1; then bad+=("$file"); fi
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "format: not formatted with .clang-format (run scripts/format.sh):" >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files formatted"
else
  clang-format -i "${files[@]}"
fi
