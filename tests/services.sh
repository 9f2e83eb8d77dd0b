#!/usr/bin/env bash
# Bring up what the test suite needs on this machine: PostgreSQL, Redis and headless Chromium.
# `make test` runs it first. Idempotent and silent when everything is already up; starts a
# local service only when it is down and fails (exit 1) when one is still not ready after a
# bounded wait. Hosts and ports follow the suite's own variables (tests/conftest.py):
#   SHOTLINE_TEST_PG     default postgresql://postgres@127.0.0.1:5432/test
#   SHOTLINE_TEST_REDIS  default redis://127.0.0.1:6379/0
# SHOTLINE_SERVICES_WAIT_S bounds each wait (default 30 s).
set -euo pipefail

PG_URL="${SHOTLINE_TEST_PG:-postgresql://postgres@127.0.0.1:5432/test}"
REDIS_URL="${SHOTLINE_TEST_REDIS:-redis://127.0.0.1:6379/0}"
WAIT_S="${SHOTLINE_SERVICES_WAIT_S:-30}"

# host and port of scheme://[user[:pw]@]host[:port][/path]
host_of() {
  local rest="${1#*://}"
  rest="${rest%%/*}"
  rest="${rest##*@}"
  echo "${rest%%:*}"
}
port_of() {
  local rest="${1#*://}"
  rest="${rest%%/*}"
  rest="${rest##*@}"
  if [[ "$rest" == *:* ]]; then echo "${rest##*:}"; else echo "$2"; fi
}
is_local() { [[ "$1" == 127.0.0.1 || "$1" == localhost || "$1" == ::1 ]]; }

# wait_until NAME CMD...: poll CMD once a second for up to WAIT_S seconds.
wait_until() {
  local name="$1"
  shift
  for _ in $(seq "$WAIT_S"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "services.sh: $name is not ready after ${WAIT_S}s" >&2
  return 1
}

PG_HOST="$(host_of "$PG_URL")"
PG_PORT="$(port_of "$PG_URL" 5432)"
pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

REDIS_HOST="$(host_of "$REDIS_URL")"
REDIS_PORT="$(port_of "$REDIS_URL" 6379)"
redis_up() { [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

start_postgres() {
  is_local "$PG_HOST" || { echo "services.sh: Postgres at $PG_HOST:$PG_PORT is down" >&2; exit 1; }
  echo "starting PostgreSQL"
  # One cluster named main per machine of this kind; its version is the only folder here.
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_until "PostgreSQL on $PG_HOST:$PG_PORT" pg_up
}

start_redis() {
  is_local "$REDIS_HOST" || { echo "services.sh: Redis at $REDIS_HOST:$REDIS_PORT is down" >&2; exit 1; }
  echo "starting Redis on port $REDIS_PORT"
  mkdir -p /var/lib/redis /var/log/redis
  # No persistence: the suite flushes what it uses, and a test restarts its own redis-server.
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_until "Redis on $REDIS_HOST:$REDIS_PORT" redis_up
}

# The contact-sheet test renders in headless Chromium (Debian's package); it looks for these.
have_chromium() { command -v chromium || command -v chromium-browser || command -v google-chrome; }

install_chromium() {
  echo "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  have_chromium >/dev/null || { echo "services.sh: chromium still missing" >&2; exit 1; }
}

# `if`, not `||`: errexit stays on inside the start functions.
if ! pg_up; then start_postgres; fi
if ! redis_up; then start_redis; fi
if ! have_chromium >/dev/null; then install_chromium; fi
