#!/usr/bin/env bash
# Test of scripts/validate-deploy.sh: every deliberately broken fixture under tests/data/deploy/
# must make its validator fail, for the reason the fixture was written for (the expected text must
# appear in the validator's output). Run by scripts/validate-deploy.sh after its own steps, or alone:
#
#   scripts/test-validate-deploy.sh
#
# A fixture that is accepted, or rejected for another reason, fails this test. Every fixture file
# in tests/data/deploy/ must be listed below (an unlisted one fails the test too).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

D=tests/data/deploy
# step | input | text the rejection must contain
CASES=(
  "envoy|$D/envoy/broken-mtls-misspelled-field.yaml|no such field: 'trusted_cert'"
  "envoy|$D/envoy/broken-mtls-wrong-type.yaml|unknown enum value: '1.3'"
  "kustomize|$D/kubernetes/broken-kustomization|unknown field \"resourcse\""
  "k8s|$D/kubernetes/broken-misspelled-field|'readinesProbe' was unexpected"
  "k8s|$D/kubernetes/broken-wrong-type|spec.ports.0.port: 'grpc' is not of type 'integer'"
  "k8s|$D/kubernetes/broken-unknown-kind|no schema for kind ServiceMonitor"
  "k8s|$D/kubernetes/broken-subpath|volumeMount policies uses subPath"
  "k8s|$D/kubernetes/broken-drain-budget|terminationGracePeriodSeconds 10 is shorter than preStop 5 s"
  "riskgate|$D/kubernetes/broken-riskgate-config|unknown field \`budgett_ms\`"
  "riskgate|$D/kubernetes/broken-riskgate-policy|attribute \`risk.scroe\`"
  "istio|$D/istio/broken-authz-misspelled-field.yaml|'notPath' was unexpected"
  "istio|$D/istio/broken-peerauth-wrong-type.yaml|spec.mtls: 'STRICT' is not of type 'object'"
  "istio|$D/istio/broken-unknown-kind.yaml|no schema for kind AuthorizationPolicies"
  "istio|$D/istio/broken-mesh-misspelled-field.yaml|envoyExtAuthzGrpc.failopen: unknown field (did you mean \`failOpen\`?)"
  "istio|$D/istio/broken-mesh-wrong-type.yaml|envoyExtAuthzGrpc.port: expected a port number 1-65535, got '9001'"
  "istio|$D/istio/broken-mesh-timeout-below-budget.yaml|timeout: 200ms must exceed riskgate's risk budget (250 ms)"
  "istio|$D/istio/broken-self-enforcement.yaml|selects riskgate's own pods"
  "istio|$D/istio/broken-check-callers-wildcard.yaml|admits any workload to send a Check"
  "istio|$D/istio/broken-waypoint-listener.yaml|needs a listener with protocol HBONE on port 15008"
  "istio|$D/istio/broken-gateway-misspelled-field.yaml|'allowedRoute' was unexpected"
  "monitoring|$D/monitoring/broken-servicemonitor-misspelled-field.yaml|'honourLabels' was unexpected"
  "monitoring|$D/monitoring/broken-rule-bad-promql.yaml|unexpected right parenthesis"
  "monitoring|$D/monitoring/broken-rule-p99-not-budget.yaml|threshold 0.5 s is not riskgate's risk.budget (0.25 s)"
  "proxy-trust|$D/envoy/broken-unguarded-trusted-header.yaml|riskgate trusts header \`x-jwt-payload\` (identity.trusted_header), but no jwt_authn provider"
  "proxy-trust|$D/istio/broken-unguarded-trusted-header.yaml|selects workloads that no RequestAuthentication with \`outputPayloadToHeader: x-jwt-payload\` selects"
  "proxy-trust|$D/istio/broken-ambient-no-waypoint-only-policy.yaml|in ambient mode a request sent straight to a pod IP skips the waypoint"
  "proxy-trust|$D/istio/broken-gateway-num-trusted-proxies.yaml|numTrustedProxies is 2 (mesh config defaultConfig.gatewayTopology)"
  "dockerfile|$D/docker/broken-hadolint.Dockerfile|DL3007"
  "dockerfile|$D/docker/broken-copy-source.Dockerfile|COPY source 'config/riskgate.yaml' does not exist in the build context"
  "dockerfile|$D/docker/broken-dockerignored-source.Dockerfile|COPY source 'tests/data/jwt/' is excluded by .dockerignore"
  "dockerfile|$D/docker/broken-missing-target.Dockerfile|can't find \`decide\` bench"
)

rejected=0
bad=0
listed=()
for case in "${CASES[@]}"; do
  IFS='|' read -r step input expect <<<"$case"
  listed+=("$input")
  out="$(scripts/validate-deploy.sh "$step" "$input" 2>&1)"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "FAILED  $input: the $step validator accepted a deliberately broken fixture"
    bad=$((bad + 1))
  # (whitespace squeezed: protobuf's parse errors vary their spacing on purpose from run to run)
  elif ! grep -qF -- "$(tr -s ' ' <<<"$expect")" <<<"$(tr -s ' ' <<<"$out")"; then
    echo "FAILED  $input: the $step validator failed (exit $rc), but not with: $expect"
    sed 's/^/          /' <<<"$out"
    bad=$((bad + 1))
  else
    echo "ok      $input rejected by $step: $expect"
    rejected=$((rejected + 1))
  fi
done

# Every fixture on disk is exercised above (a directory fixture counts through its directory).
while IFS= read -r f; do
  covered=0
  for input in "${listed[@]}"; do
    case "$f" in "$input" | "$input"/*) covered=1 ;; esac
  done
  if [ "$covered" -eq 0 ]; then
    echo "FAILED  $f: fixture not listed in scripts/test-validate-deploy.sh"
    bad=$((bad + 1))
  fi
done < <(find "$D" -type f ! -name README.md | sort)

echo "test-validate-deploy: $rejected broken fixtures rejected as expected, $bad problems"
[ "$bad" -eq 0 ]
