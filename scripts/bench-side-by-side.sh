#!/usr/bin/env bash
# Side-by-side benchmark: riskgate against a do-nothing ext_authz server (benches/noop_authz.rs:
# same tonic/prost/tokio, TCP_NODELAY), measured in the same run so the ratios carry across
# machines. Not CI: a release build, real Envoy, wrk and h2load.
#
#   scripts/bench-side-by-side.sh                 # 5 s per step
#   DURATION=2 scripts/bench-side-by-side.sh      # quicker, noisier
#
# 1. Direct gRPC Checks (h2load, a pre-built CheckRequest for an anonymous `GET /bench/1`):
#    maximum rate, then fixed rates (RATES, Checks/s): Checks/s, latency p50/p75/p90/p99/p99.9,
#    CPU per Check (/proc/<pid>/stat utime+stime over the step) and RSS, riskgate's as ratios
#    to the do-nothing server's.
# 2. Through Envoy (wrk, maximum rate), a `direct_response` route behind: no authz, Envoy's RBAC
#    filter with the rule equivalent to riskgate's, ext_authz to the do-nothing server, ext_authz
#    to riskgate; ratios to ext_authz → do-nothing.
#
# riskgate runs with risk assessment off, one route, one policy, the audit log on (to
# /dev/null), no decision cache. A run is invalid (exit 1) unless a sampled Check answer
# carries grpc-status 0 (h2load counts HTTP 200 even when grpc-status is not 0) and wrk saw
# only 2xx answers and no socket errors.
#
# Settings (environment): DURATION (s, default 5), WARMUP (s, 1), RATES ("1000 2000 5000"),
# H2LOAD_CONNS (4), H2LOAD_STREAMS (16), WRK_CONNS (16), ENVOY_BIN (default: from the repo's
# venv, scripts/python-env.sh), PROFILE (release). Tools missing: wrk and nghttp2-client are installed with apt-get.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
RATES=${RATES:-"1000 2000 5000"}
H2LOAD_CONNS=${H2LOAD_CONNS:-4}
H2LOAD_STREAMS=${H2LOAD_STREAMS:-16}
WRK_CONNS=${WRK_CONNS:-16}

die() { echo "bench-side-by-side: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null || ! command -v nghttp >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y wrk nghttp2-client >/dev/null || die "cannot install wrk and nghttp2-client"
fi
if [ -z "${ENVOY_BIN:-}" ]; then
  # shellcheck source=python-env.sh
  . scripts/python-env.sh || die "no Envoy: set ENVOY_BIN or fix scripts/python-env.sh"
fi
[ -x "${ENVOY_BIN:-}" ] || die "ENVOY_BIN=${ENVOY_BIN:-} is not executable"

# --- build -------------------------------------------------------------------------------------
# PROFILE=dev only to try the script itself quickly: the figures are meaningless.
PROFILE=${PROFILE:-release}
# shellcheck source=bench-lib.sh
. scripts/bench-lib.sh
artifacts=$(cargo build --profile "$PROFILE" --locked "${BENCH_TARGETS[@]}" \
  --message-format=json-render-diagnostics) || die "build failed"
exe() {
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1" <<<"$artifacts"
}
riskgate=$(exe riskgate)
noop=$(exe noop_authz)
decide_median=$(exe decide_median)
[ -x "$riskgate" ] && [ -x "$noop" ] && [ -x "$decide_median" ] || die "cannot find the riskgate, noop_authz and decide_median binaries"

# --- files -------------------------------------------------------------------------------------
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NOOP_PORT=$(free_port); RG_PORT=$(free_port); RG_ADMIN=$(free_port); ENVOY_PORT=$(free_port); ENVOY_ADMIN=$(free_port)

write_side_by_side_config "$work" "$RG_PORT" "$RG_ADMIN"
"$noop" --write-check "$work/check.bin"

cat >"$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    io.write(string.format(" p%s=%d", p, latency:percentile(p)))
  end
  io.write("\n")
end
EOF

envoy_config() { # name, authz port (or empty), filters yaml
  local name=$1 port=$2 filters=$3
  cat >"$work/envoy-$name.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "ok" } }
          http_filters:
$filters
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${port:-9} } } }
EOF
}
ext_authz='          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: authz }, timeout: 1s }
              failure_mode_allow: false'
rbac='          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  bench-view:
                    permissions:
                    - and_rules:
                        rules:
                        - header: { name: ":method", string_match: { exact: GET } }
                        - url_path: { path: { prefix: "/bench/" } }
                    principals: [{ any: true }]'
envoy_config direct "" ""
envoy_config rbac "" "$rbac"
envoy_config authz_noop "$NOOP_PORT" "$ext_authz"
envoy_config authz_riskgate "$RG_PORT" "$ext_authz"

# --- helpers -----------------------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  die "nothing listens on port $1"
}
# One Check with nghttp; prints the answer's gRPC message size, or fails unless grpc-status is 0.
sample_check() { # port
  local out
  out=$(nghttp -v -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/check.bin" \
    "http://127.0.0.1:$1/envoy.service.auth.v3.Authorization/Check" 2>&1 | tr -d '\0') ||
    die "sample Check on :$1 failed"
  grep -q 'grpc-status: 0' <<<"$out" || die "sample Check on :$1: grpc-status is not 0: $(grep -m1 grpc- <<<"$out")"
  # DATA frame length minus the 5-byte gRPC prefix
  grep -m1 -o 'recv DATA frame <length=[0-9]*' <<<"$out" | awk -F= '{ print $2 - 5 }'
}
percentiles() { # h2load log file -> "p50 p75 p90 p99 p99.9" in µs
  python3 - "$1" <<'PY'
import sys
xs = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.count("\t") == 2)
if not xs:
    sys.exit("no requests logged")
print(" ".join(str(xs[min(len(xs) - 1, int(len(xs) * p / 100))]) for p in (50, 75, 90, 99, 99.9)))
PY
}

declare -A RESULT
# h2load against one server; stores "rate p50 p75 p90 p99 p999 cpu_us rss_mib" in RESULT[name/load]
h2load_step() { # name pid port load(max|rate)
  local name=$1 pid=$2 port=$3 load=$4 args=(-c "$H2LOAD_CONNS" -m "$H2LOAD_STREAMS")
  local url="http://127.0.0.1:$port/envoy.service.auth.v3.Authorization/Check"
  if [ "$load" != max ]; then
    args=(-c 2 -m "$H2LOAD_STREAMS" --rps $((load / 2)))
  fi
  local hdr=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$work/check.bin")
  h2load -D "$WARMUP" -t 1 "${args[@]}" "${hdr[@]}" "$url" >/dev/null 2>&1 || true
  local t0 t1 out done_ secs
  t0=$(cpu_ticks "$pid")
  out=$(h2load -D "$DURATION" -t 1 "${args[@]}" "${hdr[@]}" --log-file "$work/h2load.log" "$url" 2>&1) ||
    die "h2load on $name failed: $out"
  t1=$(cpu_ticks "$pid")
  done_=$(grep -m1 -o '[0-9]* succeeded' <<<"$out" | awk '{ print $1 }')
  [ "${done_:-0}" -gt 0 ] || die "h2load on $name: no request succeeded"
  grep -q ' 0 failed, 0 errored' <<<"$out" || die "h2load on $name: failures: $(grep -m1 '^requests' <<<"$out")"
  secs=$(grep -m1 -o 'finished in [0-9.]*s' <<<"$out" | grep -o '[0-9.]*')
  local hz; hz=$(getconf CLK_TCK)
  RESULT[$name/$load]="$(awk -v n="$done_" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') $(percentiles "$work/h2load.log") \
$(awk -v d=$((t1 - t0)) -v n="$done_" -v hz="$hz" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }') \
$(awk -v k="$(rss_kib "$pid")" 'BEGIN { printf "%.1f", k / 1024 }')"
}

start_noop() { "$noop" --listen "127.0.0.1:$NOOP_PORT" 2>"$work/noop.log" & NOOP_PID=$!; pids+=("$NOOP_PID"); wait_port "$NOOP_PORT"; }
start_riskgate() {
  "$riskgate" serve -c "$work/riskgate.yaml" --log-format text >/dev/null 2>"$work/riskgate.log" &
  RG_PID=$!; pids+=("$RG_PID")
  wait_port "$RG_ADMIN"
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$RG_ADMIN/readyz" >/dev/null && return 0; sleep 0.05; done
  die "riskgate not ready: $(tail -n 3 "$work/riskgate.log")"
}

# --- 0. decide() in process --------------------------------------------------------------------
# The issue's CPU target is do-nothing + decide() median + 3 µs: the median of this config
# and this CheckRequest, measured here (benches/decide_median.rs), before the servers start.
DECIDE=$(cd "$work" && "$decide_median" riskgate.yaml check.bin) || die "decide_median failed"
DECIDE_US=$(awk -v l="$DECIDE" 'BEGIN { split(l, f, /[ =]/); printf "%.1f", f[2] / 1000 }')
HANDLER_US=$(awk -v l="$DECIDE" 'BEGIN { split(l, f, /[ =]/); printf "%.1f", f[4] / 1000 }')

# --- 1. direct gRPC Checks ---------------------------------------------------------------------
start_noop
start_riskgate
NOOP_BYTES=$(sample_check "$NOOP_PORT")
RG_BYTES=$(sample_check "$RG_PORT")
for load in max $RATES; do
  h2load_step noop "$NOOP_PID" "$NOOP_PORT" "$load"
  h2load_step riskgate "$RG_PID" "$RG_PORT" "$load"
done
sample_check "$RG_PORT" >/dev/null  # still answering grpc-status 0 after the load

# --- 2. through Envoy --------------------------------------------------------------------------
wrk_step() { # config name, authz pid (or empty)
  local name=$1 apid=$2 epid e0 e1 a0=0 a1=0 out line
  "$ENVOY_BIN" -c "$work/envoy-$name.yaml" --concurrency 1 --disable-hot-restart -l error \
    >"$work/envoy-$name.log" 2>&1 &
  epid=$!; pids+=("$epid")
  wait_port "$ENVOY_PORT"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ENVOY_PORT/bench/1")" = 200 ] ||
    die "Envoy ($name) does not answer 200"
  wrk -t 1 -c "$WRK_CONNS" -d "${WARMUP}s" "http://127.0.0.1:$ENVOY_PORT/bench/1" >/dev/null 2>&1 || true
  e0=$(cpu_ticks "$epid"); [ -n "$apid" ] && a0=$(cpu_ticks "$apid")
  out=$(wrk -t 1 -c "$WRK_CONNS" -d "${DURATION}s" -s "$work/report.lua" "http://127.0.0.1:$ENVOY_PORT/bench/1" 2>&1) ||
    die "wrk ($name) failed: $out"
  e1=$(cpu_ticks "$epid"); [ -n "$apid" ] && a1=$(cpu_ticks "$apid")
  kill "$epid"; wait "$epid" 2>/dev/null || true
  line=$(grep -m1 '^RESULT' <<<"$out") || die "wrk ($name): no result: $out"
  RESULT[envoy/$name]=$(awk -v e=$((e1 - e0)) -v a=$((a1 - a0)) -v hz="$(getconf CLK_TCK)" '{
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (v["status_errors"] != 0 || v["socket_errors"] != 0 || v["requests"] == 0) { print "INVALID " $0; exit }
    n = v["requests"]
    printf "%.0f %s %s %s %s %s %.1f %.1f", n / (v["duration_us"] / 1e6), v["p50"], v["p75"], v["p90"], v["p99"], v["p99.9"], e * 1e6 / hz / n, a * 1e6 / hz / n
  }' <<<"$line")
  case ${RESULT[envoy/$name]} in INVALID*) die "wrk ($name) saw non-2xx answers or socket errors: $line" ;; esac
}
wrk_step direct ""
wrk_step rbac ""
wrk_step authz_noop "$NOOP_PID"
wrk_step authz_riskgate "$RG_PID"
sample_check "$RG_PORT" >/dev/null

# --- report ------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'; }
cell() { printf '%s (%s×)' "$1" "$(ratio "$1" "$2")"; }
echo
echo "Side by side, $(date -u +%F), $(nproc) CPUs, ${DURATION} s per step; riskgate: risk off, one route, one policy, audit on."
echo "Ratios are riskgate ÷ do-nothing server in the same run. Latency in µs; CPU in µs per Check; RSS in MiB."
echo "Answer size (gRPC message): do-nothing $NOOP_BYTES B, riskgate $RG_BYTES B."
echo
echo "Direct gRPC Checks (h2load; max rate: $H2LOAD_CONNS connections × $H2LOAD_STREAMS streams; fixed rates: 2 connections):"
echo
echo "| load | server | Checks/s | p50 | p75 | p90 | p99 | p99.9 | CPU/Check | RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for load in max $RATES; do
  read -r -a n <<<"${RESULT[noop/$load]}"
  read -r -a r <<<"${RESULT[riskgate/$load]}"
  label=$load; [ "$load" = max ] || label="$load/s"
  echo "| $label | do-nothing | ${n[0]} | ${n[1]} | ${n[2]} | ${n[3]} | ${n[4]} | ${n[5]} | ${n[6]} | ${n[7]} |"
  row="| $label | riskgate"
  for i in 0 1 2 3 4 5 6 7; do row+=" | $(cell "${r[$i]}" "${n[$i]}")"; done
  echo "$row |"
done
read -r -a n <<<"${RESULT[noop/max]}"
read -r -a r <<<"${RESULT[riskgate/max]}"
echo
echo "In process, one thread (benches/decide_median.rs, medians): decide() $DECIDE_US µs; whole Check handler (decide + span, metrics, answer, audit) $HANDLER_US µs."
awk -v n="${n[6]}" -v r="${r[6]}" -v d="$DECIDE_US" 'BEGIN {
  t = n + d + 3
  printf "CPU target at max rate: do-nothing %.1f + decide() %.1f + 3 = %.1f µs per Check; riskgate %.1f: %s (%+.1f µs).\n", n, d, t, r, (r <= t ? "met" : "not met"), r - t }'
echo
echo "Through Envoy ($("$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: [^/]*/[0-9.]*' | head -1 | cut -d/ -f2), --concurrency 1; wrk, $WRK_CONNS connections, max rate; direct_response behind; ratios to ext_authz → do-nothing):"
echo
echo "| configuration | req/s | p50 | p75 | p90 | p99 | p99.9 | Envoy CPU/req | authz CPU/req |"
echo "|---|---|---|---|---|---|---|---|---|"
read -r -a base <<<"${RESULT[envoy/authz_noop]}"
for name in direct rbac authz_noop authz_riskgate; do
  read -r -a v <<<"${RESULT[envoy/$name]}"
  case $name in
    direct) label="direct_response, no authz" ;;
    rbac) label="RBAC filter, equivalent rule" ;;
    authz_noop) label="ext_authz → do-nothing" ;;
    authz_riskgate) label="ext_authz → riskgate" ;;
  esac
  row="| $label"
  for i in 0 1 2 3 4 5 6; do row+=" | $(cell "${v[$i]}" "${base[$i]}")"; done
  case $name in authz_*) row+=" | $(cell "${v[7]}" "${base[7]}")" ;; *) row+=" | –" ;; esac
  echo "$row |"
done
