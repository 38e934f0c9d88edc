#!/usr/bin/env bash
# Instructions per Check of the real riskgate binary (release), counted by callgrind over the
# whole service path (tonic/h2, extract, decide, respond, audit writer, metrics, span), on the
# side-by-side configuration (risk off, one route, one policy, audit on to /dev/null). h2load
# sends N Checks, then 3N Checks, to a server started under callgrind; the difference of the
# two totals over 2N cancels start-up and shutdown. Independent of machine load. Not CI.
#
#   scripts/profile-check.sh                  # N=2000
#   N=500 KEEP=/tmp/cg scripts/profile-check.sh   # keep the 3N profile for callgrind_annotate
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
N=${N:-2000}
die() { echo "profile-check: $*" >&2; exit 1; }
if ! command -v valgrind >/dev/null || ! command -v h2load >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y valgrind nghttp2-client >/dev/null || die "cannot install valgrind and nghttp2-client"
fi
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
cargo build --quiet --release --locked "${BENCH_TARGETS[@]}" || die "build failed"
riskgate=target/release/riskgate
noop=$(ls -t target/release/deps/noop_authz-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port)
write_side_by_side_config "$work" "$PORT" "$ADMIN"
"$noop" --write-check "$work/check.bin"
# Runs the server under callgrind, sends $1 Checks, stops it; prints the instruction total.
count() {
  local n=$1 out=$2
  valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$out" \
    "$riskgate" serve -c "$work/riskgate.yaml" --log-format text >/dev/null 2>"$work/vg.log" &
  pid=$!
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null || die "riskgate not ready: $(tail -n 5 "$work/vg.log")"
  h2load -n "$n" -c 2 -m 8 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/check.bin" \
    "http://127.0.0.1:$PORT/envoy.service.auth.v3.Authorization/Check" >"$work/h2load.out" 2>&1 ||
    die "h2load failed: $(tail -n 5 "$work/h2load.out")"
  grep -q " $n succeeded, 0 failed, 0 errored" "$work/h2load.out" || die "h2load: $(grep -m1 '^requests' "$work/h2load.out")"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  sed -n 's/.*Collected : //p' "$work/vg.log"
}
a=$(count "$N" "$work/cg.a"); b=$(count $((3 * N)) "$work/cg.b")
echo "instructions per Check (whole service path): $(( (b - a) / (2 * N) ))  [N=$N: $a, 3N: $b]"
if [ -n "${KEEP:-}" ]; then cp "$work/cg.b" "$KEEP"; echo "profile of 3N Checks kept in $KEEP"; fi
