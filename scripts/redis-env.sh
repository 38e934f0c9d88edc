#!/usr/bin/env bash
# Makes a Redis server (>= 7) available for the state-store tests (tests/state_redis.rs).
#
#   scripts/redis-env.sh          # run it: installs Debian's redis-server when missing, prints nothing on success
#   . scripts/redis-env.sh        # or source it: same, and also exports REDIS_SERVER_BIN and REDIS_CLI_BIN
#
# Idempotent: nothing is installed when `redis-server` (or $REDIS_SERVER_BIN) is already there and
# is version 7 or later. Installing needs apt-get and root (or passwordless sudo); the installer's
# output is kept in ${TMPDIR:-/tmp}/riskgate-redis-apt.log. On failure one line on stderr says what broke.

_riskgate_redisenv() {
  local server cli log sudo major
  log="${TMPDIR:-/tmp}/riskgate-redis-apt.log"
  server="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"
  cli="${REDIS_CLI_BIN:-$(command -v redis-cli || true)}"

  if [ -z "$server" ] || [ -z "$cli" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "redis-env: redis-server not found and apt-get is missing; install Redis >= 7 and set REDIS_SERVER_BIN / REDIS_CLI_BIN" >&2
      return 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
      else
        echo "redis-env: redis-server not found; installing it needs root (apt-get install redis-server)" >&2
        return 1
      fi
    fi
    if ! { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends redis-server redis-tools; } >"$log" 2>&1; then
      echo "redis-env: apt-get install redis-server failed (see $log: $(grep -m1 -E '^E:' "$log" || tail -n1 "$log"))" >&2
      return 1
    fi
    server="$(command -v redis-server || true)"
    cli="$(command -v redis-cli || true)"
    if [ -z "$server" ] || [ -z "$cli" ]; then
      echo "redis-env: apt-get installed redis-server but it is not on PATH" >&2
      return 1
    fi
  fi

  major="$("$server" --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
  if [ -z "$major" ] || [ "$major" -lt 7 ]; then
    echo "redis-env: $server is version '${major:-unknown}', need Redis >= 7" >&2
    return 1
  fi
  export REDIS_SERVER_BIN="$server" REDIS_CLI_BIN="$cli"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # sourced: keep the caller's shell options, report failure through the return status
  _riskgate_redisenv
  _riskgate_redisenv_rc=$?
  unset -f _riskgate_redisenv
  return $_riskgate_redisenv_rc
else
  set -uo pipefail
  _riskgate_redisenv
fi
