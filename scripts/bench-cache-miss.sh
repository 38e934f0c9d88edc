#!/usr/bin/env bash
# Cache misses (issue #15 item 4): Checks/s and latency when every Check carries a fresh
# action token (so every Check makes one risk-API call), against the local simulator
# (crates/risk-sim) answering at once and 50 ms away (its scripted `delay_ms`). The load
# generator (benches/miss_load.rs) first measures the simulator's own latency with plain GETs
# of recommendations in the same run, so its figure can be subtracted. Release build; not CI.
#
#   scripts/bench-cache-miss.sh       # CHECKS=2000 per phase, CONCURRENCY=16, PROBES=200
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
CHECKS=${CHECKS:-2000}
CONCURRENCY=${CONCURRENCY:-16}
PROBES=${PROBES:-200}
die() { echo "bench-cache-miss: $*" >&2; exit 1; }
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
cargo build --quiet --release --locked "${BENCH_TARGETS[@]}" ||
  die "build failed"
load=$(ls -t target/release/deps/miss_load-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port)
# Every token the run uses, fresh ones for each phase: answered at once, or after 50 ms.
python3 - "$work/script.yaml" "$CHECKS" "$PROBES" <<'PY'
import sys
path, n, probes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    for prefix, delay in (("fast", 0), ("slow", 50)):
        names = [f"{prefix}-{i}" for i in range(n)] + [f"{prefix}-probe-{i}" for i in range(probes)]
        for t in names:
            f.write(f"{t}: {{ risk_score: 12, action_type: login, delay_ms: {delay} }}\n")
PY
echo sim-secret >"$work/secret"
target/release/risk-sim --listen 127.0.0.1:0 --client-secret-file "$work/secret" --script "$work/script.yaml" \
  >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
for _ in $(seq 1 250); do grep -q 'listening on' "$work/sim.out" 2>/dev/null && break; sleep 0.02; done
sim=$(sed -n 's/^risk-sim listening on //p' "$work/sim.out")
[ -n "$sim" ] || die "risk-sim did not start: $(tail -n 3 "$work/sim.log")"
mkdir -p "$work/policies"
cat >"$work/policies/bench.cedar" <<'CEDAR'
@id("bench-login")
permit (principal, action == Action::"login", resource);
CEDAR
cat >"$work/riskgate.yaml" <<YAML
listen: { grpc: "127.0.0.1:$PORT", admin: "127.0.0.1:$ADMIN" }
mode: enforce
policies: { dir: policies, schema: $repo/policies/schema.cedarschema }
reload: { poll_ms: 0 }
shutdown: { drain_ms: 0, grace_ms: 1000 }
risk:
  base_url: $sim
  client_id: riskgate-test
  client_secret_file: $work/secret
  token_header: x-action-token
  budget: 1s
  call_budget: { calls: 0 }
  max_concurrent_calls: 0
routes:
  - { method: POST, path: /login, action: login, resource: { type: Application, id: bank }, risk: required, action_types: [login] }
default: deny
YAML
target/release/riskgate serve -c "$work/riskgate.yaml" --log-format text >/dev/null 2>"$work/riskgate.log" &
pids+=($!)
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null || die "riskgate not ready: $(tail -n 3 "$work/riskgate.log")"
echo "Cache misses, $(date -u +%F), $(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg); every Check a fresh action token (one API call each);"
echo "$CHECKS Checks per row from $CONCURRENCY concurrent streams on one connection; simulator latency from $PROBES plain GETs in the same run. Latency in µs."
echo
echo "| risk API | Checks/s | p50 | p90 | p99 | p99.9 | simulator GET p50 / p99 | Check p50 − simulator p50 |"
echo "|---|---|---|---|---|---|---|---|"
for phase in fast slow; do
  out=$("$load" --grpc "http://127.0.0.1:$PORT" --sim "$sim" --prefix "$phase" --checks "$CHECKS" \
    --concurrency "$CONCURRENCY" --probes "$PROBES") || die "load generator failed ($phase): $out"
  line=$(grep -m1 '^RESULT' <<<"$out") || die "no result: $out"
  label="simulator, loopback"; [ "$phase" = slow ] && label="simulator + 50 ms"
  awk -v label="$label" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "| %s | %s | %s | %s | %s | %s | %s / %s | %d |\n", label, v["rate"], v["p50"], v["p90"], v["p99"], v["p999"],
      v["sim_p50"], v["sim_p99"], v["p50"] - v["sim_p50"] }' <<<"$line"
done
