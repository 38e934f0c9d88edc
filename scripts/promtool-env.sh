#!/usr/bin/env bash
# Makes Prometheus' `promtool` available for the alert-rule check in scripts/validate-deploy.sh.
#
#   scripts/promtool-env.sh        # run it: installs Debian's prometheus package when promtool is missing
#   . scripts/promtool-env.sh      # or source it: same, and also exports PROMTOOL_BIN
#
# Idempotent: nothing is installed when `promtool` (or $PROMTOOL_BIN) is already there. Installing
# needs apt-get and root (or passwordless sudo); the installer's output is kept in
# ${TMPDIR:-/tmp}/riskgate-promtool-apt.log. On failure one line on stderr says what broke.

_riskgate_promtoolenv() {
  local bin log sudo
  log="${TMPDIR:-/tmp}/riskgate-promtool-apt.log"
  bin="${PROMTOOL_BIN:-$(command -v promtool || true)}"
  if [ -z "$bin" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "promtool-env: promtool not found and apt-get is missing; install Prometheus' promtool and set PROMTOOL_BIN" >&2
      return 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
      else
        echo "promtool-env: promtool not found; installing it needs root (apt-get install prometheus)" >&2
        return 1
      fi
    fi
    # Debian's `prometheus` package ships promtool; its service is not started in a container.
    if ! { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus; } >"$log" 2>&1; then
      echo "promtool-env: apt-get install prometheus failed (see $log: $(grep -m1 -E '^E:' "$log" || tail -n1 "$log"))" >&2
      return 1
    fi
    bin="$(command -v promtool || true)"
    if [ -z "$bin" ]; then
      echo "promtool-env: apt-get installed prometheus but promtool is not on PATH" >&2
      return 1
    fi
  fi
  export PROMTOOL_BIN="$bin"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # sourced: keep the caller's shell options, report failure through the return status
  _riskgate_promtoolenv
  _riskgate_promtoolenv_rc=$?
  unset -f _riskgate_promtoolenv
  return $_riskgate_promtoolenv_rc
else
  set -uo pipefail
  _riskgate_promtoolenv
fi
