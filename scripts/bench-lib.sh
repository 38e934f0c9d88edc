# Shared by the release bench scripts (sourced, not run): the one set of build targets and the
# side-by-side configuration.

# Every release bench script builds the same targets, so the same feature resolution: none of
# them rebuilds what another built.
BENCH_TARGETS=(-p riskgate -p risk-sim --bin riskgate --bin risk-sim --bench noop_authz --bench miss_load --bench decide_median)

# The side-by-side configuration (risk off, one route, one policy, audit on) in DIR:
# DIR/riskgate.yaml and DIR/policies/bench.cedar, listening on the given ports.
write_side_by_side_config() { # dir grpc_port admin_port
  local dir=$1 grpc=$2 admin=$3
  mkdir -p "$dir/policies"
  cat >"$dir/policies/bench.cedar" <<'CEDAR'
@id("bench-view")
permit (principal, action == Action::"view_balance", resource);
CEDAR
  cat >"$dir/riskgate.yaml" <<YAML
listen: { grpc: "127.0.0.1:$grpc", admin: "127.0.0.1:$admin" }
mode: enforce
policies: { dir: policies, schema: $repo/policies/schema.cedarschema }
reload: { poll_ms: 0 }
shutdown: { drain_ms: 0, grace_ms: 1000 }
routes:
  - { method: GET, path: "/bench/{id}", action: view_balance, resource: { type: Account, param: id }, risk: "off" }
default: deny
YAML
}
