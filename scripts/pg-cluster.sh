#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: a fresh cluster in a directory the caller made,
# listening on 127.0.0.1 only (a free port picked at random) and on a Unix socket in that
# directory, every connection trusted, superuser `postgres`. fsync stays on (the benchmarks
# measure durable commits). As root the server runs as the system user stripe-pg (created when
# missing); otherwise as the current user. Uses the newest /usr/lib/postgresql/*/bin, else PATH.
#   dir="$(mktemp -d)"
#   url="$(scripts/pg-cluster.sh start "$dir")"   # prints postgresql://postgres@127.0.0.1:PORT/postgres
#   scripts/pg-cluster.sh stop "$dir"             # stops the server, removes the directory
#   scripts/pg-cluster.sh bindir                  # prints the binaries' directory; exits 1 if none
# start also writes the URL to DIR/url and the server's log to DIR/server.log; everything but
# the URL goes to stderr. stop is safe after a start that failed halfway, or never ran.
set -euo pipefail
pg_user=stripe-pg
start_timeout=30
marker=.stripe-pg-cluster

die() { echo "pg-cluster: $*" >&2; exit 1; }

# The directory holding initdb, pg_ctl, postgres and pg_isready: the newest version under
# /usr/lib/postgresql (Debian's layout), else the one on PATH. $1: a version to prefer.
find_bindir() {
  local want="${1:-}" d v best="" best_v=-1 tool ok
  if [ -n "$want" ] && [ -x "/usr/lib/postgresql/$want/bin/pg_ctl" ]; then
    echo "/usr/lib/postgresql/$want/bin"
    return 0
  fi
  for d in /usr/lib/postgresql/*/bin; do
    if [ ! -x "$d/initdb" ] || [ ! -x "$d/pg_ctl" ] || [ ! -x "$d/postgres" ]; then continue; fi
    v="$(basename "$(dirname "$d")")"
    v="${v%%.*}"
    case "$v" in '' | *[!0-9]*) continue ;; esac
    if [ "$v" -gt "$best_v" ]; then best="$d"; best_v="$v"; fi
  done
  if [ -n "$best" ]; then echo "$best"; return 0; fi
  ok=1
  for tool in initdb pg_ctl postgres pg_isready; do command -v "$tool" >/dev/null || ok=0; done
  if [ "$ok" -eq 1 ]; then dirname "$(command -v pg_ctl)"; return 0; fi
  return 1
}

# pg_isready from the same directory when it has one (Debian's /usr/bin/pg_isready is a wrapper).
isready_bin() {
  if [ -x "$1/pg_isready" ]; then echo "$1/pg_isready"; else command -v pg_isready; fi
}

# Runs "$@" as $run_as (empty: as ourselves), in $dir (the caller's working directory may be
# unreadable for that user).
as_user() {
  if [ -z "$run_as" ]; then
    (cd "$dir" && "$@")
  elif command -v runuser >/dev/null; then
    (cd "$dir" && runuser -u "$run_as" -- "$@")
  else
    # shellcheck disable=SC2016  # $0 and $@ are the inner shell's
    (cd "$dir" && su -s /bin/sh -c 'exec "$0" "$@"' "$run_as" -- "$@")
  fi
}

ensure_user() {
  local i
  for i in 1 2 3 4 5; do
    getent passwd "$pg_user" >/dev/null && return 0
    # Two starts at once may race here (or find /etc/passwd locked): look again, then retry.
    useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user" 2>/dev/null && return 0
    sleep "$i"
  done
  getent passwd "$pg_user" >/dev/null || die "could not create the system user $pg_user (useradd failed)"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
  local i port
  for i in $(seq 1 200); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
    if ! port_in_use "$port"; then echo "$port"; return 0; fi
  done
  return 1
}

# Whether process $1 is this cluster's live postmaster (not a zombie, not a process that
# reused a stale pid file's number): a postgres whose working directory is $dir/data.
postgres_alive() {
  local stat
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = postgres ] || return 1
  [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$dir/data" ] || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

log_tail() {
  if [ -f "$dir/server.log" ]; then
    echo "pg-cluster: the last lines of $dir/server.log:" >&2
    tail -n 30 "$dir/server.log" | sed 's/^/  /' >&2
  fi
}

cmd_start() {
  [ -d "$dir" ] || die "start: $dir is not a directory (make it first, e.g. with mktemp -d)"
  [ -z "$(ls -A "$dir")" ] || die "start: $dir is not empty (give a fresh directory, e.g. from mktemp -d)"
  # The server's socket is $dir/.s.PGSQL.PORT, and Unix socket paths end at 107 bytes.
  [ "${#dir}" -le 90 ] || die "start: $dir is too long a path for the server's Unix socket (at most 90 bytes)"
  bindir="$(find_bindir)" || die "start: no PostgreSQL binaries (initdb, pg_ctl, postgres) under /usr/lib/postgresql/*/bin or on PATH; scripts/install-deps.sh installs them"
  : >"$dir/$marker"
  run_as=""
  if [ "$(id -u)" -eq 0 ]; then
    ensure_user
    run_as="$pg_user"
    chown "$pg_user" "$dir"
    chmod 700 "$dir"
    as_user test -w "$dir" -a -x "$dir" ||
      die "start: $pg_user cannot write to $dir (is a parent directory private to root?); use a directory from mktemp -d"
  fi
  echo "pg-cluster: initdb in $dir/data ($("$bindir/postgres" --version), as ${run_as:-$(id -un)})" >&2
  if ! as_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C >"$dir/initdb.log" 2>&1; then
    sed 's/^/  /' "$dir/initdb.log" >&2
    die "start: initdb failed"
  fi
  # $dir may hold characters postgresql.conf wants escaped: a quote is doubled there.
  local qdir="${dir//\'/\'\'}"
  cat >>"$dir/data/postgresql.conf" <<EOF

# scripts/pg-cluster.sh: a throwaway server for the tests.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$qdir'
max_connections = 200
shared_buffers = 128MB
fsync = on
EOF
  local attempt port=""
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    port="$(pick_port)" || die "start: found no free port on 127.0.0.1 in 20000-60000"
    echo "pg-cluster: starting on 127.0.0.1:$port" >&2
    # pg_ctl's own chatter goes to stderr: stdout carries the URL alone.
    if as_user "$bindir/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t "$start_timeout" \
      -o "-p $port" >&2; then
      break
    fi
    # Another process took the port between the check and the bind: try another one.
    if grep -q -e "could not bind IPv4 address" -e "could not create any TCP/IP sockets" \
      "$dir/server.log" 2>/dev/null && [ "$attempt" -lt 10 ]; then
      echo "pg-cluster: port $port was taken meanwhile; trying another" >&2
      : >"$dir/server.log"
      port=""
      continue
    fi
    log_tail
    # A server that did start but did not answer in time is stopped here; stop removes $dir.
    as_user "$bindir/pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1 || true
    die "start: the server did not start"
  done
  [ -n "$port" ] || die "start: the server did not start"
  local pg_isready waited=0
  pg_isready="$(isready_bin "$bindir")"
  until "$pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; do
    if [ "$waited" -ge "$start_timeout" ]; then
      log_tail
      as_user "$bindir/pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1 || true
      die "start: the server on port $port did not answer pg_isready within $start_timeout s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  local url="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "$url" >"$dir/url"
  echo "$url"
}

cmd_stop() {
  if [ ! -e "$dir" ]; then return 0; fi
  [ -d "$dir" ] || die "stop: $dir is not a directory"
  if [ ! -e "$dir/$marker" ] && [ -n "$(ls -A "$dir")" ]; then
    die "stop: $dir was not made by '$0 start' and is not empty; leaving it alone"
  fi
  local pid=""
  if [ -f "$dir/data/postmaster.pid" ]; then
    pid="$(head -n 1 "$dir/data/postmaster.pid")"
    case "$pid" in '' | *[!0-9]*) pid="" ;; esac
  fi
  if [ -n "$pid" ] && postgres_alive "$pid"; then
    # As the user who owns the cluster, with the binaries of the version that made it.
    run_as=""
    if [ "$(id -u)" -eq 0 ]; then
      run_as="$(stat -c %U "$dir/data")"
      if [ "$run_as" = root ]; then run_as=""; fi
    fi
    local version=""
    if [ -f "$dir/data/PG_VERSION" ]; then version="$(cat "$dir/data/PG_VERSION")"; fi
    if bindir="$(find_bindir "$version")"; then
      if ! as_user "$bindir/pg_ctl" stop -D "$dir/data" -m fast -w -t 60 >&2; then
        echo "pg-cluster: fast shutdown failed; trying an immediate one" >&2
        as_user "$bindir/pg_ctl" stop -D "$dir/data" -m immediate -w -t 30 >&2 || true
      fi
    fi
    # Still running (no binaries, or pg_ctl failed): kill it.
    if postgres_alive "$pid"; then
      echo "pg-cluster: killing postmaster $pid" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf -- "$dir"
}

usage() {
  echo "usage: $0 start DIR | stop DIR | bindir" >&2
  exit 2
}

[ $# -ge 1 ] || usage
case "$1" in
  bindir)
    [ $# -eq 1 ] || usage
    find_bindir
    ;;
  start | stop)
    [ $# -eq 2 ] || usage
    if [ -z "$2" ] || [ "$2" = / ]; then die "$1: refusing DIR '$2'"; fi
    dir="$(cd "$2" 2>/dev/null && pwd -P)" || dir=""
    if [ -z "$dir" ]; then
      if [ "$1" = start ]; then die "start: $2 is not a directory (make it first, e.g. with mktemp -d)"; fi
      [ -e "$2" ] && die "stop: cannot enter $2"
      exit 0
    fi
    [ "$dir" != / ] || die "$1: refusing DIR /"
    "cmd_$1"
    ;;
  *) usage ;;
esac
