#!/usr/bin/env bash
# Start-up to ready (issue #15 item 4): starts the release binary RUNS times with the shipped
# example config (deploy/riskgate.yaml, policies/) — risk configured against the local
# simulator (crates/risk-sim), whose client secret readiness waits for — and reports the
# median, min and max time from spawn to the first `/readyz` 200 (polled every 1 ms).
# Target: ≤ 200 ms. Not CI.
#
#   scripts/bench-startup.sh            # RUNS=11
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
RUNS=${RUNS:-11}
die() { echo "bench-startup: $*" >&2; exit 1; }
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
cargo build --quiet --release --locked "${BENCH_TARGETS[@]}" || die "build failed"
work=$(mktemp -d)
sim_pid=""
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
echo sim-secret >"$work/secret"
target/release/risk-sim --listen 127.0.0.1:0 --client-secret-file "$work/secret" >"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 1 200); do grep -q 'listening on' "$work/sim.out" 2>/dev/null && break; sleep 0.02; done
sim_url=$(sed -n 's/^risk-sim listening on //p' "$work/sim.out")
[ -n "$sim_url" ] || die "risk-sim did not start: $(tail -n 3 "$work/sim.log")"
python3 - "$repo" "$work" "$sim_url" "$RUNS" <<'PY'
import http.client, os, signal, socket, statistics, subprocess, sys, time
import re
repo, work, sim, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
grpc, admin = free_port(), free_port()
# The shipped config, only its addresses and files pointed at this machine (line edits, so
# every other setting stays exactly as shipped).
text = open(f"{repo}/deploy/riskgate.yaml").read()
subs = [
    (r"grpc: 0\.0\.0\.0:9001", f"grpc: 127.0.0.1:{grpc}"),
    (r"admin: 0\.0\.0\.0:9002", f"admin: 127.0.0.1:{admin}"),
    (r"\.\./policies", f"{repo}/policies"),
    (r"region: us ", f"base_url: {sim} "),
    (r"client_id: riskgate ", "client_id: riskgate-test "),
    (r"client_secret_file: /var/run/secrets/riskgate/client-secret", f"client_secret_file: {work}/secret"),
]
for pat, rep in subs:
    text, n = re.subn(pat, rep, text)
    if n == 0:
        sys.exit(f"bench-startup: deploy/riskgate.yaml no longer has `{pat}`")
open(f"{work}/riskgate.yaml", "w").write(text)
times = []
for i in range(runs):
    t0 = time.perf_counter()
    p = subprocess.Popen([f"{repo}/target/release/riskgate", "serve", "-c", f"{work}/riskgate.yaml"],
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/riskgate.log", "w"))
    ready = None
    while time.perf_counter() - t0 < 10:
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                ready = time.perf_counter() - t0
                break
        except OSError:
            pass
        if p.poll() is not None:
            break
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL); p.wait()
    if ready is None:
        sys.exit("bench-startup: not ready within 10 s: " + open(f"{work}/riskgate.log").read()[-500:])
    times.append(ready * 1000)
print(f"start-up to ready, shipped example config and policies, {runs} runs: "
      f"median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f} "
      f"(load average {os.getloadavg()[0]:.2f})")
PY
