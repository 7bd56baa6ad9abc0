#!/usr/bin/env bash
# deps.sh — install what `make test` needs when this machine lacks it: the
# PostgreSQL server and client, curl, PgBouncer for the pooler tests, and
# Chromium for the browser tests.
# Installs with apt-get as root; otherwise says what to install.
set -euo pipefail

need=()
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v curl >/dev/null || need+=(curl)
command -v pgbouncer >/dev/null || ls /usr/sbin/pgbouncer >/dev/null 2>&1 || need+=(pgbouncer)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium fonts-liberation)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: missing ${need[*]}; install them, e.g. sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "deps.sh: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
