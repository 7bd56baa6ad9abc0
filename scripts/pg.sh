#!/usr/bin/env bash
# pg.sh — a throwaway local PostgreSQL for `make run` and `make test`.
#
#   scripts/pg.sh start DIR PORT   initdb DIR if needed, start it on 127.0.0.1:PORT,
#                                  create database pgsse, print its DATABASE_URL
#                                  (fsync off unless PG_DURABLE=1)
#   scripts/pg.sh restart DIR      pg_ctl restart -m fast (tests of database restarts)
#   scripts/pg.sh stop DIR         stop it (the data stays in DIR)
#
# The server binaries refuse to run as root, so as root they run as `postgres`.
set -euo pipefail

cmd=${1:?usage: pg.sh start DIR PORT | stop DIR}
dir=${2:?data directory}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$bindir" ] && PATH="$PATH:$bindir"
command -v initdb >/dev/null || { echo "pg.sh: initdb not found; install the postgresql package" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PATH" "$@"; else "$@"; fi
}

case $cmd in
start)
  port=${3:?port}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_owner initdb -D "$dir" -U postgres --auth=trust --no-sync -E UTF8 >"$dir.initdb.log" 2>&1 ||
      { cat "$dir.initdb.log" >&2; exit 1; }
  fi
  if ! as_owner pg_ctl -D "$dir" status >/dev/null 2>&1; then
    # fsync off: the data is disposable, and tests then measure pgsse, not the
    # disk. PG_DURABLE=1 keeps PostgreSQL's durable defaults, as production runs
    # (make bench compares the commit path both ways).
    unsafe="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [ "${PG_DURABLE:-}" = 1 ] && unsafe=
    as_owner pg_ctl -D "$dir" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $unsafe -c max_connections=300" >/dev/null
  fi
  psql -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'pgsse'" | grep -q 1 ||
    psql -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE pgsse" >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/pgsse?sslmode=disable"
  ;;
restart)
  as_owner pg_ctl -D "$dir" -m fast -w -t 60 restart >/dev/null
  ;;
stop)
  [ -f "$dir/PG_VERSION" ] && as_owner pg_ctl -D "$dir" -m fast -w stop >/dev/null || true
  ;;
*)
  echo "usage: pg.sh start DIR PORT | restart DIR | stop DIR" >&2; exit 2 ;;
esac
