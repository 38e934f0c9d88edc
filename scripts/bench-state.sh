#!/usr/bin/env bash
# What `state: redis` adds to a Check compared with `state: memory` (not part of CI): runs
# examples/bench_state.rs against a throwaway redis-server on a free loopback port and prints
# write-Check p50/p99 for both stores, their difference, and read Checks/s for both.
#
#   scripts/bench-state.sh                       # release build, 2000 writes, 3 s of reads
#   BENCH_PROFILE=dev BENCH_WRITES=200 scripts/bench-state.sh   # quick smoke run
#
# Env: BENCH_PROFILE (release), BENCH_WRITES (2000), BENCH_READ_MS (3000), BENCH_CONCURRENCY (16).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/redis-env.sh
profile=${BENCH_PROFILE:-release}
cargo build --locked --profile "$profile" --example bench_state
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
bin=${CARGO_TARGET_DIR:-target}/$dir/examples/bench_state

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$REDIS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do "$REDIS_CLI_BIN" -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done

mem=$(RUST_LOG=off "$bin" memory)
red=$(RUST_LOG=off "$bin" redis "redis://127.0.0.1:$port")
echo "$mem"
echo "$red"
python3 - "$mem" "$red" <<'PY'
import sys
m, r = (dict(kv.split("=") for kv in line.split()) for line in sys.argv[1:3])
print("| store | write p50 (us) | write p99 (us) | read Checks/s |")
print("|---|---|---|---|")
for name, d in (("memory", m), ("redis", r)):
    print(f"| {name} | {d['write_p50_us']} | {d['write_p99_us']} | {d['reads_per_s']} |")
for p in ("p50", "p99"):
    k = f"write_{p}_us"
    print(f"redis adds {float(r[k]) - float(m[k]):.0f} us to a write Check at {p}")
PY
