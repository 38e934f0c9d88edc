#!/usr/bin/env bash
# Creates/updates the repo-local Python virtual environment (.venv) with scripts/requirements.txt.
#
#   scripts/python-env.sh          # run it: sets up .venv, prints nothing on success
#   . scripts/python-env.sh        # or source it: same, and also exports ENVOY_BIN and puts .venv/bin on PATH
#
# Idempotent: the requirements are (re)installed only when their SHA-256 differs from the stamp in
# .venv/.requirements.sha256. Quiet on success; on failure one line on stderr says what broke (the
# installer's full output is kept in .venv/pip.log).

_riskgate_pyenv() {
  local repo req venv stamp want have log py
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  req="$repo/scripts/requirements.txt"
  venv="$repo/.venv"
  stamp="$venv/.requirements.sha256"
  log="$venv/pip.log"
  py="${PYTHON:-python3}"

  if ! command -v "$py" >/dev/null 2>&1; then
    echo "python-env: '$py' not found; install Python 3 (python3 with the venv module)" >&2
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
      echo "python-env: '$py -m venv $venv' failed; install Python's venv module (Debian: apt-get install python3-venv)" >&2
      return 1
    fi
  fi

  want="$(sha256sum "$req" | cut -d' ' -f1)" || return 1
  have="$(cat "$stamp" 2>/dev/null || true)"
  if [ "$want" != "$have" ]; then
    rm -f "$stamp"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req" >"$log" 2>&1; then
      echo "python-env: pip install -r scripts/requirements.txt failed (see $log: $(grep -m1 -iE 'error' "$log" || tail -n1 "$log"))" >&2
      return 1
    fi
    echo "$want" >"$stamp"
  fi

  export RISKGATE_VENV="$venv"
  if [ -z "${ENVOY_BIN:-}" ]; then
    ENVOY_BIN="$("$repo/scripts/envoy-bin")" || return 1
  fi
  export ENVOY_BIN
  case ":$PATH:" in
    *":$venv/bin:"*) ;;
    *) export PATH="$venv/bin:$PATH" ;;
  esac
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # sourced: keep the caller's shell options, report failure through the return status
  _riskgate_pyenv
  _riskgate_pyenv_rc=$?
  unset -f _riskgate_pyenv
  return $_riskgate_pyenv_rc
else
  set -uo pipefail
  _riskgate_pyenv
fi
