#!/usr/bin/env bash
# Installs the Debian packages stripe_billing builds and tests with. Does nothing when they are
# all present already; otherwise runs `apt-get update` once and `apt-get install -y` (needs root).
# postgresql is there for its binaries: the tests run throwaway servers (scripts/pg-cluster.sh).
set -euo pipefail
packages=(
  build-essential cmake pkg-config git
  libcurl4-openssl-dev nlohmann-json3-dev libspdlog-dev
  libgtest-dev libgmock-dev
  libsqlite3-dev libyaml-cpp-dev libcpp-httplib-dev libcli11-dev libbenchmark-dev
  postgresql libpq-dev libssl-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
