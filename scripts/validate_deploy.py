#!/usr/bin/env python3
"""Checks behind scripts/validate-deploy.sh (run with the repo's .venv Python).

Subcommands (each prints one line per object or problem and exits 1 on any problem):

  k8s RENDERED.yaml...          every object against the Kubernetes JSON schemas bundled in
                                kubernetes-validate, strict (unknown fields fail), for each version in
                                K8S_VERSIONS; a kind without a schema fails; plus riskgate's own
                                Deployment invariants (directory mounts, drain budget, hardening).
  istio --rendered R.yaml FILE...
                                Istio CRs against schemas generated from cloudcoil-models-istio's
                                models, made strict (additionalProperties: false everywhere); the
                                meshConfig of IstioOperator / istiod Helm values checked field by
                                field against Istio's MeshConfig (unknown fields fail); cross-checks
                                with the rendered Kubernetes manifests R.yaml (provider service, port,
                                timeout above the risk budget, header names, no self-enforcement).
  monitoring --rendered R.yaml --promtool BIN --workdir DIR FILE...
                                ServiceMonitor / PrometheusRule against strict schemas generated
                                from cloudcoil-models-prometheus-operator; `promtool check rules` on
                                every PrometheusRule's spec; the Check-p99 alert's threshold equals
                                risk.budget of the rendered config R.yaml.
  extract RENDERED.yaml OUTDIR --policies-dir DIR
                                writes the riskgate-config / riskgate-policies ConfigMaps as files
                                (paths under /etc/riskgate/ rewritten into OUTDIR) for
                                `riskgate validate`, and fails if a policy file of DIR is missing
                                from the ConfigMap; prints the config file's path.
  dockerfile DOCKERFILE --context DIR [--stage OUTDIR]
                                every COPY/ADD source (other than --from=stage) exists in the build
                                context and is not excluded by DIR/.dockerignore; with --stage, copies
                                the sources as the build would see them (for a cargo check).
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

# Kubernetes versions the manifests must be valid for: the oldest we support (the native preStop
# `sleep` action is on by default from 1.30) and the newest schema set kubernetes-validate has.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

RISKGATE_APP = "riskgate"           # app.kubernetes.io/name of riskgate's pods / Service name
ISTIO_ROOT_NAMESPACE = "istio-system"
PROVIDER_NAME = "riskgate"

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"FAILED  {msg}")


def ok(msg: str) -> None:
    print(f"ok      {msg}")


def load_docs(path: str) -> list[tuple[int, Any]]:
    """(index, document) for every non-empty YAML document of a file."""
    with open(path, encoding="utf-8") as f:
        try:
            docs = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            fail(f"{path}: not YAML: {e}")
            return []
    return [(i, d) for i, d in enumerate(docs) if d is not None]


def describe(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "<not a mapping>"
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{doc.get('kind', '?')}/{(ns + '/') if ns else ''}{name}"


def suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


# --------------------------------------------------------------------------------------------
# Kubernetes: kubernetes-validate, strict, and no kind without a schema
# --------------------------------------------------------------------------------------------

K8S_GROUPS = {"", "apps", "batch", "autoscaling", "policy"}


def is_builtin_group(api_version: str) -> bool:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return group in K8S_GROUPS or group.endswith(".k8s.io")


def cmd_k8s(files: list[str]) -> None:
    import kubernetes_validate

    for path in files:
        docs = load_docs(path)
        shutdown = riskgate_shutdown(docs)
        for i, doc in docs:
            what = f"{path}#{i} {describe(doc)}"
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                fail(f"{what}: not a Kubernetes object (apiVersion and kind are required)")
                continue
            api = str(doc["apiVersion"])
            if not is_builtin_group(api):
                # kubernetes-validate maps `foo.example.io/v1` onto the built-in group `foo`, which
                # could validate a custom resource against an unrelated schema: refuse instead.
                fail(f"{what}: no schema for kind {doc['kind']} ({api}); only built-in Kubernetes "
                     f"kinds belong here (Istio resources live in deploy/istio/)")
                continue
            bad = False
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError:
                    fail(f"{what}: no schema for kind {doc['kind']} ({api}) in Kubernetes {version}")
                    bad = True
                    break
                except kubernetes_validate.ValidationError as e:
                    # the library's error carries the jsonschema error's fields (path, message)
                    where = ".".join(str(p) for p in getattr(e, "path", [])) or "<root>"
                    fail(f"{what}: Kubernetes {version}: {where}: {getattr(e, 'message', e)}")
                    bad = True
                    break
            if not bad:
                ok(f"{what} (Kubernetes {', '.join(K8S_VERSIONS)}, strict)")
            if doc.get("kind") == "Deployment" and (doc.get("metadata") or {}).get("name") == RISKGATE_APP:
                check_riskgate_deployment(doc, f"{path}#{i}", shutdown)


def riskgate_shutdown(docs: list[tuple[int, Any]]) -> tuple[float, float]:
    """riskgate's shutdown.drain / grace in seconds, from the rendered config ConfigMap."""
    drain_ms, grace_ms = 5000.0, 20000.0      # riskgate's defaults
    for _, doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and \
                (doc.get("metadata") or {}).get("name") == "riskgate-config":
            for text in (doc.get("data") or {}).values():
                try:
                    sd = (yaml.safe_load(text) or {}).get("shutdown") or {}
                except (yaml.YAMLError, AttributeError):
                    continue
                drain_ms = config_ms(sd, "drain", drain_ms)
                grace_ms = config_ms(sd, "grace", grace_ms)
    return drain_ms / 1000, grace_ms / 1000


def check_riskgate_deployment(doc: dict, where: str, shutdown: tuple[float, float]) -> None:
    """Invariants the schema cannot express, for riskgate's own Deployment."""
    spec = doc.get("spec") or {}
    pod = ((spec.get("template") or {}).get("spec")) or {}
    containers = [c for c in pod.get("containers") or [] if c.get("name") == RISKGATE_APP]
    label = f"{where} Deployment/{RISKGATE_APP}"
    if not containers:
        fail(f"{label}: no container named {RISKGATE_APP}")
        return
    c = containers[0]
    n_before = len(problems)
    if (spec.get("replicas") or 1) < 1:
        fail(f"{label}: replicas must be at least 1")
    for m in c.get("volumeMounts") or []:
        if m.get("subPath") or m.get("subPathExpr"):
            fail(f"{label}: volumeMount {m.get('name')} uses subPath: ConfigMap/Secret updates "
                 f"never reach a subPath mount, so hot reload would silently stop working")
    sc = c.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{label}: securityContext.readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{label}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        fail(f"{label}: securityContext.capabilities.drop must contain ALL")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail(f"{label}: runAsNonRoot must be true")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        fail(f"{label}: seccompProfile.type must be RuntimeDefault")
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in c:
            fail(f"{label}: {probe} missing")
    res = c.get("resources") or {}
    if not res.get("requests") or not res.get("limits"):
        fail(f"{label}: resources.requests and resources.limits are both required")
    # Drain budget: the preStop delay, then riskgate's own shutdown (drain serving while not
    # ready, then at most grace for in-flight Checks) must end before the kubelet's SIGKILL.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    sleep_s = (pre.get("sleep") or {}).get("seconds")
    drain_s, inflight_s = shutdown
    if sleep_s is None:
        fail(f"{label}: lifecycle.preStop.sleep.seconds missing (endpoints need time to drop the pod)")
    elif grace < sleep_s + drain_s + inflight_s:
        fail(f"{label}: terminationGracePeriodSeconds {grace} is shorter than preStop {sleep_s} s + "
             f"riskgate shutdown.drain {drain_s:g} s + shutdown.grace {inflight_s:g} s: the "
             f"kubelet would kill riskgate before it has drained")
    if len(problems) == n_before:
        ok(f"{label}: directory mounts, hardening, probes, resources, drain budget")


# --------------------------------------------------------------------------------------------
# Istio: strict JSON schemas from cloudcoil-models-istio + MeshConfig field-by-field
# --------------------------------------------------------------------------------------------

_istio_schema_cache: dict[tuple[str, str], dict | None] = {}


def strictify(node: Any) -> None:
    """additionalProperties: false on every object schema that lists its properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strictify(v)
    elif isinstance(node, list):
        for v in node:
            strictify(v)


def istio_schema(api_version: str, kind: str) -> dict | None:
    key = (api_version, kind)
    if key in _istio_schema_cache:
        return _istio_schema_cache[key]
    schema = None
    m = re.fullmatch(r"([a-z]+)\.istio\.io/(v[0-9a-z]+)", api_version)
    if m:
        try:
            mod = importlib.import_module(f"cloudcoil.models.istio.{m.group(1)}.{m.group(2)}")
        except ModuleNotFoundError:
            mod = None
        cls = getattr(mod, kind, None) if mod else None
        fields = getattr(cls, "model_fields", {})
        if cls is not None and "kind" in fields and fields["kind"].default == kind:
            schema = cls.model_json_schema(by_alias=True, mode="validation")
            strictify(schema)
    _istio_schema_cache[key] = schema
    return schema


# Gateway API `Gateway` (gateway.networking.k8s.io/v1, standard channel v1.2), for ambient
# waypoints. No Gateway API model is installed here (cloudcoil-models-istio has Istio's own CRDs
# only), so this is the v1 Gateway's field list written out from the Gateway API reference,
# strict like the others: unknown fields fail, required fields and enums as in the CRD.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_REF = {"type": "object", "required": ["name"], "properties": {
    "group": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
    "namespace": {"type": "string"}}}
GATEWAY_SCHEMA: dict = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "Gateway"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"},
            "labels": _STR_MAP, "annotations": _STR_MAP}},
        "spec": {"type": "object", "required": ["gatewayClassName", "listeners"], "properties": {
            "gatewayClassName": {"type": "string", "minLength": 1},
            "listeners": {"type": "array", "minItems": 1, "maxItems": 64, "items": {
                "type": "object", "required": ["name", "port", "protocol"], "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "hostname": {"type": "string"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "protocol": {"type": "string", "minLength": 1},
                    "tls": {"type": "object", "properties": {
                        "mode": {"enum": ["Terminate", "Passthrough"]},
                        "certificateRefs": {"type": "array", "items": _REF},
                        "options": _STR_MAP}},
                    "allowedRoutes": {"type": "object", "properties": {
                        "namespaces": {"type": "object", "properties": {
                            "from": {"enum": ["All", "Selector", "Same"]},
                            "selector": {"type": "object"}}},
                        "kinds": {"type": "array", "items": {"type": "object", "required": ["kind"],
                                  "properties": {"group": {"type": "string"},
                                                 "kind": {"type": "string"}}}}}}}}},
            "addresses": {"type": "array", "items": {"type": "object", "required": ["value"],
                          "properties": {"type": {"type": "string"}, "value": {"type": "string"}}}},
            "infrastructure": {"type": "object", "properties": {
                "labels": _STR_MAP, "annotations": _STR_MAP,
                "parametersRef": {"type": "object", "required": ["group", "kind", "name"],
                                  "properties": {"group": {"type": "string"},
                                                 "kind": {"type": "string"},
                                                 "name": {"type": "string"}}}}}}},
    },
}
strictify(GATEWAY_SCHEMA)
WAYPOINT_CLASS = "istio-waypoint"


def check_waypoint(doc: dict, what: str) -> None:
    """Istio programs a waypoint only from an HBONE listener on port 15008."""
    spec = doc.get("spec") or {}
    if spec.get("gatewayClassName") != WAYPOINT_CLASS:
        return
    if not any(l.get("protocol") == "HBONE" and l.get("port") == 15008 for l in spec.get("listeners") or []):
        fail(f"{what}: a {WAYPOINT_CLASS} Gateway needs a listener with protocol HBONE on port 15008")


def validate_istio_resource(doc: dict, what: str) -> bool:
    import jsonschema

    if str(doc.get("apiVersion")).startswith("gateway.networking.k8s.io/") and doc.get("kind") == "Gateway":
        schema = GATEWAY_SCHEMA
    else:
        schema = istio_schema(str(doc.get("apiVersion")), str(doc.get("kind")))
    if schema is None:
        fail(f"{what}: no schema for kind {doc.get('kind')} ({doc.get('apiVersion')}) in "
             f"cloudcoil-models-istio")
        return False
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        for err in errors[:5]:
            best = jsonschema.exceptions.best_match([err])
            # inside anyOf (e.g. the spec's provider/no-provider variants), report the deepest cause
            leaf = best
            while leaf.context:
                leaf = jsonschema.exceptions.best_match(leaf.context)
            where = ".".join(str(p) for p in leaf.absolute_path) or "<root>"
            fail(f"{what}: {where}: {leaf.message}")
        return False
    return True


# --------------------------------------------------------------------------------------------
# Monitoring: Prometheus Operator CRs (strict schemas from cloudcoil-models-prometheus-operator),
# `promtool check rules` on every PrometheusRule, alert thresholds vs the rendered riskgate config
# --------------------------------------------------------------------------------------------

MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
P99_ALERT = "RiskgateCheckP99OverBudget"


def monitoring_schema(api_version: str, kind: str) -> dict | None:
    if api_version != "monitoring.coreos.com/v1" or kind not in MONITORING_KINDS:
        return None
    mod = importlib.import_module("cloudcoil.models.prometheus_operator.v1")
    cls = getattr(mod, kind, None)
    fields = getattr(cls, "model_fields", {})
    if cls is None or "kind" not in fields or fields["kind"].default != kind:
        return None
    schema = cls.model_json_schema(by_alias=True, mode="validation")
    strictify(schema)
    return schema


def rendered_budget_ms(rendered: str) -> float | None:
    """risk.budget of the rendered riskgate-config ConfigMap, in ms (None without risk)."""
    for _, doc in load_docs(rendered):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and \
                (doc.get("metadata") or {}).get("name") == "riskgate-config":
            for text in (doc.get("data") or {}).values():
                try:
                    risk = (yaml.safe_load(text) or {}).get("risk")
                except (yaml.YAMLError, AttributeError):
                    continue
                if isinstance(risk, dict):
                    return config_ms(risk, "budget", 250.0)
    return None


def cmd_monitoring(files: list[str], rendered: str, promtool: str, workdir: str) -> None:
    import subprocess

    import jsonschema

    budget_ms = rendered_budget_ms(rendered)
    for path in files:
        for i, doc in load_docs(path):
            what = f"{path}#{i} {describe(doc)}"
            if not isinstance(doc, dict):
                fail(f"{what}: not a mapping")
                continue
            if doc.get("kind") == "Kustomization" or doc.get("kind") == "Component":
                continue
            schema = monitoring_schema(str(doc.get("apiVersion")), str(doc.get("kind")))
            if schema is None:
                fail(f"{what}: no schema for kind {doc.get('kind')} ({doc.get('apiVersion')}); only "
                     f"monitoring.coreos.com/v1 {sorted(MONITORING_KINDS)} belong here")
                continue
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc),
                            key=lambda e: list(e.absolute_path))
            for err in errors[:5]:
                leaf = jsonschema.exceptions.best_match([err])
                while leaf.context:
                    leaf = jsonschema.exceptions.best_match(leaf.context)
                where = ".".join(str(p) for p in leaf.absolute_path) or "<root>"
                fail(f"{what}: {where}: {leaf.message}")
            if errors:
                continue
            ok(f"{what} (strict schema from cloudcoil-models-prometheus-operator)")
            if doc["kind"] != "PrometheusRule":
                continue
            rules_file = Path(workdir) / f"rules-{Path(path).stem}-{i}.yaml"
            rules_file.write_text(yaml.safe_dump(doc.get("spec") or {}), encoding="utf-8")
            out = subprocess.run([promtool, "check", "rules", str(rules_file)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                msg = " ".join((out.stdout + out.stderr).replace(str(rules_file), path).split())
                fail(f"{what}: promtool check rules: {msg}")
            else:
                ok(f"{what} (promtool check rules)")
            for group in (doc.get("spec") or {}).get("groups") or []:
                for rule in group.get("rules") or []:
                    if rule.get("alert") != P99_ALERT:
                        continue
                    m = re.search(r">\s*([0-9.]+)\s*$", str(rule.get("expr", "")).strip())
                    if budget_ms is None:
                        fail(f"{what}: {P99_ALERT}: the rendered config has no risk.budget")
                    elif not m or abs(float(m.group(1)) * 1000 - budget_ms) > 1e-6:
                        fail(f"{what}: {P99_ALERT}: threshold {m.group(1) if m else '?'} s is not "
                             f"riskgate's risk.budget ({budget_ms / 1000:g} s)")
                    else:
                        ok(f"{what}: {P99_ALERT} threshold = risk.budget ({budget_ms:g} ms)")


# A small schema language for MeshConfig: dict = object with exactly these optional keys,
# callables check scalars; `Any` = not modelled (accepted as is).
def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {type(v).__name__}"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected true/false, got {v!r}"


def _uint32(v: Any) -> str | None:
    ok_ = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFFFFFF
    return None if ok_ else f"expected an unsigned 32-bit integer, got {v!r}"


def _port(v: Any) -> str | None:
    ok_ = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535
    return None if ok_ else f"expected a port number 1-65535, got {v!r}"


DURATION_RE = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+$")


def duration_ms(v: Any) -> float | None:
    if not isinstance(v, str) or not DURATION_RE.match(v):
        return None
    unit_ms = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
    return sum(float(n) * unit_ms[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|us|µs|ns|h|m|s)", v))


def config_ms(section: dict, name: str, default: float) -> float:
    """A riskgate config duration in ms: the typed field (`250ms`, `5s`; a bare number is ms)
    or its legacy `<name>_ms` spelling; `default` when neither is set."""
    for key in (name, f"{name}_ms"):
        v = section.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str) and (ms := duration_ms(v.strip())) is not None:
            return ms
    return default


def _duration(v: Any) -> str | None:
    return None if duration_ms(v) is not None else f"expected a duration such as 1s or 500ms, got {v!r}"


def _status(v: Any) -> str | None:
    return None if isinstance(v, str) and re.fullmatch(r"[1-5][0-9][0-9]", v) else \
        f"expected an HTTP status as a string (e.g. \"503\"), got {v!r}"


def _enum(*values: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in values else f"expected one of {', '.join(values)}, got {v!r}"


def _list(item: Any) -> tuple:
    return ("list", item)


def _map(value: Any) -> tuple:
    return ("map", value)


ANY = object()

REQUEST_BODY = {"maxRequestBytes": _uint32, "allowPartialMessage": _bool, "packAsBytes": _bool}
EXT_AUTHZ_GRPC = {
    "service": _str, "port": _port, "timeout": _duration, "failOpen": _bool,
    "statusOnError": _status, "includeRequestBodyInCheck": REQUEST_BODY,
}
EXT_AUTHZ_HTTP = {
    "service": _str, "port": _port, "timeout": _duration, "pathPrefix": _str, "failOpen": _bool,
    "statusOnError": _status, "includeHeadersInCheck": _list(_str),
    "includeRequestHeadersInCheck": _list(_str), "includeAdditionalHeadersInCheck": _map(_str),
    "includeRequestBodyInCheck": REQUEST_BODY, "headersToUpstreamOnAllow": _list(_str),
    "headersToDownstreamOnDeny": _list(_str), "headersToDownstreamOnAllow": _list(_str),
}
# ExtensionProvider: `name` plus exactly one provider (istio.mesh.v1alpha1, MeshConfig.ExtensionProvider).
PROVIDER_KINDS: dict[str, Any] = {
    "envoyExtAuthzHttp": EXT_AUTHZ_HTTP, "envoyExtAuthzGrpc": EXT_AUTHZ_GRPC,
    "zipkin": ANY, "lightstep": ANY, "datadog": ANY, "stackdriver": ANY, "opencensus": ANY,
    "skywalking": ANY, "opentelemetry": ANY, "prometheus": ANY, "envoyFileAccessLog": ANY,
    "envoyHttpAls": ANY, "envoyTcpAls": ANY, "envoyOtelAls": ANY,
}
MESH_CONFIG: dict[str, Any] = {
    "extensionProviders": _list("EXTENSION_PROVIDER"),
    "pathNormalization": {"normalization": _enum(
        "DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")},
    # The other MeshConfig fields: known names, values not modelled here.
    **{k: ANY for k in (
        "proxyListenPort proxyInboundListenPort proxyHttpPort connectTimeout protocolDetectionTimeout "
        "tcpKeepalive ingressClass ingressService ingressControllerMode ingressSelector enableTracing "
        "accessLogFile accessLogFormat accessLogEncoding enableEnvoyAccessLogService "
        "disableEnvoyListenerLog defaultConfig outboundTrafficPolicy inboundTrafficPolicy configSources "
        "enableAutoMtls trustDomain trustDomainAliases caCertificates defaultServiceExportTo "
        "defaultVirtualServiceExportTo defaultDestinationRuleExportTo rootNamespace localityLbSetting "
        "dnsRefreshRate h2UpgradePolicy inboundClusterStatName outboundClusterStatName certificates "
        "serviceSettings enablePrometheusMerge verifyCertificateAtClient ca defaultProviders "
        "discoverySelectors defaultHttpRetryPolicy meshMTLS tlsDefaults compliancePolicy").split()},
}
ISTIO_OPERATOR_SPEC = {k: ANY for k in (
    "profile installPackagePath hub tag resourceSuffix namespace revision compatibilityVersion "
    "components values unvalidatedValues").split()}
ISTIO_OPERATOR_SPEC["meshConfig"] = MESH_CONFIG


def check_shape(value: Any, spec: Any, path: str) -> None:
    if spec is ANY:
        return
    if spec == "EXTENSION_PROVIDER":
        check_provider(value, path)
        return
    if callable(spec):
        err = spec(value)
        if err:
            fail(f"{path}: {err}")
        return
    if isinstance(spec, tuple):
        kind, item = spec
        if kind == "list":
            if not isinstance(value, list):
                fail(f"{path}: expected a list, got {type(value).__name__}")
                return
            for i, v in enumerate(value):
                check_shape(v, item, f"{path}[{i}]")
        else:
            if not isinstance(value, dict):
                fail(f"{path}: expected a mapping, got {type(value).__name__}")
                return
            for k, v in value.items():
                check_shape(v, item, f"{path}.{k}")
        return
    if not isinstance(value, dict):
        fail(f"{path}: expected a mapping, got {type(value).__name__}")
        return
    for k, v in value.items():
        if k not in spec:
            fail(f"{path}.{k}: unknown field{suggest(str(k), list(spec))}")
            continue
        check_shape(v, spec[k], f"{path}.{k}")


def check_provider(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        fail(f"{path}: expected a mapping, got {type(value).__name__}")
        return
    if not isinstance(value.get("name"), str) or not value.get("name"):
        fail(f"{path}.name: required (a non-empty string)")
    kinds = [k for k in value if k != "name"]
    for k in kinds:
        if k not in PROVIDER_KINDS:
            fail(f"{path}.{k}: unknown field{suggest(k, ['name', *PROVIDER_KINDS])}")
    known = [k for k in kinds if k in PROVIDER_KINDS]
    if len(known) != 1:
        fail(f"{path}: needs exactly one provider type, found {known or 'none'}")
    for k in known:
        check_shape(value[k], PROVIDER_KINDS[k], f"{path}.{k}")


def rendered_facts(rendered: str) -> dict:
    """What the Istio files must agree with, read from the rendered Kubernetes manifests."""
    facts: dict[str, Any] = {"service": None, "grpc_port": None, "pod_labels": {}, "namespace": None,
                             "budget_ms": None, "trusted_header": None}
    for _, doc in load_docs(rendered):
        if not isinstance(doc, dict):
            continue
        meta = doc.get("metadata") or {}
        if doc.get("kind") == "Service" and meta.get("name") == RISKGATE_APP:
            facts["service"] = f"{meta.get('name')}.{meta.get('namespace', 'default')}.svc.cluster.local"
            for p in (doc.get("spec") or {}).get("ports") or []:
                if p.get("name") == "grpc":
                    facts["grpc_port"] = p.get("port")
        if doc.get("kind") == "Deployment" and meta.get("name") == RISKGATE_APP:
            facts["namespace"] = meta.get("namespace", "default")
            facts["pod_labels"] = (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        if doc.get("kind") == "ConfigMap" and meta.get("name") == "riskgate-config":
            for text in (doc.get("data") or {}).values():
                cfg = yaml.safe_load(text) or {}
                facts["budget_ms"] = config_ms(cfg.get("risk") or {}, "budget", 250)
                th = (cfg.get("identity") or {}).get("trusted_header")
                facts["trusted_header"] = (th or {}).get("name")
    return facts


def check_mesh_config(mesh: Any, where: str, facts: dict) -> None:
    n_before = len(problems)
    check_shape(mesh, MESH_CONFIG, where)
    if len(problems) > n_before or not isinstance(mesh, dict):
        return
    providers = [p for p in mesh.get("extensionProviders") or [] if p.get("name") == PROVIDER_NAME]
    if len(providers) != 1 or "envoyExtAuthzGrpc" not in providers[0]:
        fail(f"{where}.extensionProviders: needs exactly one `{PROVIDER_NAME}` provider of type envoyExtAuthzGrpc")
        return
    g = providers[0]["envoyExtAuthzGrpc"]
    p = f"{where}.extensionProviders[{PROVIDER_NAME}].envoyExtAuthzGrpc"
    if facts["service"] and g.get("service") != facts["service"]:
        fail(f"{p}.service: {g.get('service')!r} is not riskgate's Service ({facts['service']})")
    if facts["grpc_port"] and g.get("port") != facts["grpc_port"]:
        fail(f"{p}.port: {g.get('port')!r} is not the Service's grpc port ({facts['grpc_port']})")
    t = duration_ms(g.get("timeout"))
    budget = facts["budget_ms"] or 250
    if t is None:
        fail(f"{p}.timeout: required (Istio's default is 10 minutes)")
    elif t <= budget:
        fail(f"{p}.timeout: {g.get('timeout')} must exceed riskgate's risk budget ({budget:g} ms), "
             f"or the proxy gives up before riskgate's own fail-mode answer")
    if g.get("failOpen") is not False:
        fail(f"{p}.failOpen: must be false (riskgate unreachable must not mean allowed)")
    if g.get("statusOnError") != "503":
        fail(f"{p}.statusOnError: must be \"503\" (like riskgate's fail-closed answer)")
    body = g.get("includeRequestBodyInCheck")
    if not isinstance(body, dict) or not body.get("maxRequestBytes"):
        fail(f"{p}.includeRequestBodyInCheck.maxRequestBytes: required (the body sent to riskgate is bounded)")
    elif body["maxRequestBytes"] > 1 << 20:
        fail(f"{p}.includeRequestBodyInCheck.maxRequestBytes: {body['maxRequestBytes']} is more than 1 MiB")
    norm = (mesh.get("pathNormalization") or {}).get("normalization")
    if norm not in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        fail(f"{where}.pathNormalization.normalization: must be MERGE_SLASHES or "
             f"DECODE_AND_MERGE_SLASHES (riskgate denies non-canonical paths), got {norm!r}")
    if len(problems) == n_before:
        ok(f"{where}: MeshConfig fields; provider `{PROVIDER_NAME}` -> {g.get('service')}:{g.get('port')}, "
           f"timeout {g.get('timeout')} > budget {budget:g} ms, fail closed with 503, body <= "
           f"{body['maxRequestBytes']} B; path normalization {norm}")


def check_check_callers(what: str, spec: dict) -> None:
    """An ALLOW policy in riskgate's namespace must name who may send a Check (port 9001): a
    caller of the gRPC port can claim any principal and burn any single-use action token, so
    only the gateways' and enforced sidecars' service accounts, never `*` nor nobody-in-particular."""
    for j, rule in enumerate(spec.get("rules") or []):
        ports = {str(p) for op in rule.get("to") or [] for p in ((op.get("operation") or {}).get("ports") or [])}
        if ports and "9001" not in ports:
            continue
        sources = [src.get("source") or {} for src in rule.get("from") or []]
        if not sources:
            fail(f"{what}: rules[{j}] admits any caller to the gRPC port 9001; name the callers' "
                 f"principals (cluster.local/ns/NS/sa/SA)")
        for k, src in enumerate(sources):
            wild = [p for p in src.get("principals") or [] if "*" in str(p)]
            if wild or not src.get("principals"):
                fail(f"{what}: rules[{j}].from[{k}].source.principals {wild or 'unset'} admits any workload "
                     f"to send a Check (claiming any user, burning anyone's action token); list the gateways' "
                     f"and enforced sidecars' service accounts (cluster.local/ns/NS/sa/SA)")


def cmd_istio(files: list[str], rendered: str) -> None:
    facts = rendered_facts(rendered)
    meshes: list[tuple[str, Any]] = []
    policies: list[tuple[str, dict]] = []
    request_auths: list[tuple[str, dict]] = []
    gateways: set[tuple[str | None, str]] = set()
    for path in files:
        for i, doc in load_docs(path):
            what = f"{path}#{i} {describe(doc)}"
            if not isinstance(doc, dict):
                fail(f"{what}: not a mapping")
                continue
            if "apiVersion" not in doc and "kind" not in doc:
                # istiod Helm chart values: only meshConfig is expected here
                extra = [k for k in doc if k != "meshConfig"]
                if extra:
                    fail(f"{path}: Helm values: unexpected top-level keys {extra} (only meshConfig)")
                if "meshConfig" in doc:
                    meshes.append((f"{path}: meshConfig", doc["meshConfig"]))
                    check_mesh_config(doc["meshConfig"], f"{path}: meshConfig", facts)
                continue
            if doc.get("apiVersion") == "install.istio.io/v1alpha1" and doc.get("kind") == "IstioOperator":
                n = len(problems)
                for k in doc:
                    if k not in ("apiVersion", "kind", "metadata", "spec"):
                        fail(f"{what}: {k}: unknown field{suggest(str(k), ['metadata', 'spec'])}")
                check_shape(doc.get("spec") or {}, ISTIO_OPERATOR_SPEC, f"{what}: spec")
                mesh = (doc.get("spec") or {}).get("meshConfig")
                if mesh is not None and len(problems) == n:
                    meshes.append((f"{what}: spec.meshConfig", mesh))
                    check_mesh_config(mesh, f"{what}: spec.meshConfig", facts)
                continue
            if validate_istio_resource(doc, what):
                if doc.get("kind") == "Gateway":
                    n = len(problems)
                    check_waypoint(doc, what)
                    gateways.add(((doc.get("metadata") or {}).get("namespace"), doc["metadata"]["name"]))
                    if len(problems) == n:
                        ok(f"{what} (strict Gateway API v1 schema)")
                    continue
                ok(f"{what} (strict schema from cloudcoil-models-istio)")
                if doc.get("kind") == "AuthorizationPolicy":
                    policies.append((what, doc))
                if doc.get("kind") == "RequestAuthentication":
                    request_auths.append((what, doc))

    # The IstioOperator overlay and the Helm values must say the same thing.
    for (w1, m1), (w2, m2) in zip(meshes, meshes[1:]):
        if m1 != m2:
            fail(f"{w2} differs from {w1}: keep the mesh config files identical")
    provider_names = {p.get("name") for _, m in meshes if isinstance(m, dict)
                      for p in m.get("extensionProviders") or [] if isinstance(p, dict)}

    for what, doc in policies:
        spec = doc.get("spec") or {}
        ns = (doc.get("metadata") or {}).get("namespace")
        if spec.get("action") == "CUSTOM":
            name = (spec.get("provider") or {}).get("name")
            if not name:
                fail(f"{what}: action CUSTOM needs provider.name")
            elif meshes and name not in provider_names:
                fail(f"{what}: provider {name!r} is not an extension provider of the mesh config "
                     f"({sorted(n for n in provider_names if n)})")
            refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
            if spec.get("selector") and refs:
                fail(f"{what}: selector and targetRefs are exclusive")
            for ref in refs:
                if ref.get("kind") == "Gateway" and (ns, ref.get("name")) not in gateways:
                    fail(f"{what}: targetRefs Gateway {ref.get('name')!r} is not among the files "
                         f"(namespace {ns}); pass the waypoint or gateway file too")
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            applies_to_riskgate_ns = ns in (ISTIO_ROOT_NAMESPACE, facts["namespace"])
            selects_riskgate = all(facts["pod_labels"].get(k) == v for k, v in selector.items())
            if applies_to_riskgate_ns and selects_riskgate and facts["pod_labels"] and not refs:
                fail(f"{what}: selects riskgate's own pods (labels {facts['pod_labels']}): riskgate "
                     f"would be asked to authorize its own Checks")
            if not spec.get("rules"):
                fail(f"{what}: a CUSTOM policy needs rules (none means it never triggers)")
        elif spec.get("provider"):
            fail(f"{what}: provider is only meaningful with action CUSTOM")
        if spec.get("action", "ALLOW") == "ALLOW" and ns == facts["namespace"]:
            check_check_callers(what, spec)

    for what, doc in request_auths:
        for j, rule in enumerate((doc.get("spec") or {}).get("jwtRules") or []):
            header = rule.get("outputPayloadToHeader")
            if facts["trusted_header"] and header and header.lower() != facts["trusted_header"].lower():
                fail(f"{what}: jwtRules[{j}].outputPayloadToHeader {header!r} is not the header riskgate "
                     f"trusts (identity.trusted_header.name {facts['trusted_header']!r})")


# --------------------------------------------------------------------------------------------
# riskgate validate: the rendered ConfigMaps as files
# --------------------------------------------------------------------------------------------

def cmd_extract(rendered: str, outdir: str, policies_dir: str) -> None:
    out = Path(outdir)
    maps = {}
    for _, doc in load_docs(rendered):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            maps[(doc.get("metadata") or {}).get("name")] = doc.get("data") or {}
    for name in ("riskgate-config", "riskgate-policies"):
        if name not in maps:
            fail(f"{rendered}: no ConfigMap {name}")
    if problems:
        return
    deployment_path = "/etc/riskgate/"
    (out / "config").mkdir(parents=True, exist_ok=True)
    (out / "policies").mkdir(parents=True, exist_ok=True)
    for fname, text in maps["riskgate-policies"].items():
        (out / "policies" / fname).write_text(text, encoding="utf-8")
    config_file = None
    for fname, text in maps["riskgate-config"].items():
        # The Deployment mounts the ConfigMaps at /etc/riskgate/{config,policies}: point those
        # absolute paths at the extracted copies.
        (out / "config" / fname).write_text(text.replace(deployment_path, str(out) + "/"), encoding="utf-8")
        if fname.endswith((".yaml", ".yml")):
            config_file = out / "config" / fname
    in_map = set(maps["riskgate-policies"])
    for p in sorted(Path(policies_dir).iterdir()):
        if p.suffix in (".cedar", ".cedarschema") or p.name == "entities.json":
            if p.name not in in_map:
                fail(f"{rendered}: ConfigMap riskgate-policies lacks {p.name} (add it to "
                     f"{policies_dir}/kustomization.yaml)")
    if config_file is None:
        fail(f"{rendered}: ConfigMap riskgate-config has no .yaml file")
        return
    print(config_file)


# --------------------------------------------------------------------------------------------
# Dockerfile: COPY/ADD sources against the build context and .dockerignore
# --------------------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        parts = buf.strip().split(None, 1)
        out.append((start, parts[0].upper(), parts[1] if len(parts) > 1 else ""))
        buf = ""
    return out


def dockerignore_patterns(context: Path) -> list[tuple[bool, str]]:
    f = context / ".dockerignore"
    pats = []
    if f.exists():
        for line in f.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            pat = line[1:] if neg else line
            pat = os.path.normpath(pat.strip("/")) if pat.strip("/") else "."
            pats.append((neg, pat))
    return pats


def _match(pattern: str, path: str) -> bool:
    # Docker matches a pattern against the path and each of its parent directories.
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if pattern == "." or fnmatch.fnmatchcase(prefix, pattern.replace("**/", "*").replace("**", "*")):
            return True
    return False


def ignored(path: str, pats: list[tuple[bool, str]]) -> bool:
    result = False
    for neg, pat in pats:
        if _match(pat, path):
            result = not neg
    return result


def cmd_dockerfile(dockerfile: str, context_dir: str, stage: str | None) -> None:
    context = Path(context_dir).resolve()
    pats = dockerignore_patterns(context)
    text = Path(dockerfile).read_text(encoding="utf-8")
    n_copies = 0
    for line, instr, args in dockerfile_instructions(text):
        if instr not in ("COPY", "ADD"):
            continue
        args = args.strip()
        if args.startswith("["):
            try:
                words = json.loads(args)
            except json.JSONDecodeError:
                fail(f"{dockerfile}:{line}: {instr} JSON form does not parse")
                continue
        else:
            words = shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        operands = [w for w in words if not w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        if len(operands) < 2:
            fail(f"{dockerfile}:{line}: {instr} needs a source and a destination")
            continue
        for src in operands[:-1]:
            n_copies += 1
            if re.match(r"^[a-z]+://", src):
                continue
            if "$" in src:
                fail(f"{dockerfile}:{line}: {instr} source {src!r} uses a variable (cannot be checked)")
                continue
            rel = os.path.normpath(src.lstrip("/"))
            if rel.startswith(".."):
                fail(f"{dockerfile}:{line}: {instr} source {src!r} is outside the build context")
                continue
            matches = sorted(context.glob(rel)) if any(c in rel for c in "*?[") else \
                ([context / rel] if (context / rel).exists() else [])
            if not matches:
                fail(f"{dockerfile}:{line}: {instr} source {src!r} does not exist in the build context {context}")
                continue
            for m in matches:
                r = str(m.relative_to(context))
                files = [m] if m.is_file() else [p for p in m.rglob("*") if p.is_file()]
                kept = [p for p in files if not ignored(str(p.relative_to(context)), pats)]
                if not kept:
                    fail(f"{dockerfile}:{line}: {instr} source {src!r} is excluded by .dockerignore")
                    continue
                if stage:
                    for p in kept:
                        dst = Path(stage) / p.relative_to(context)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(p, dst)
    if n_copies == 0:
        fail(f"{dockerfile}: no COPY/ADD from the build context")
    if not problems:
        ok(f"{dockerfile}: {n_copies} COPY/ADD sources exist in {context} and pass .dockerignore")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("k8s")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("istio")
    p.add_argument("--rendered", required=True)
    p.add_argument("files", nargs="+")
    p = sub.add_parser("monitoring")
    p.add_argument("--rendered", required=True)
    p.add_argument("--promtool", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("files", nargs="+")
    p = sub.add_parser("extract")
    p.add_argument("rendered")
    p.add_argument("outdir")
    p.add_argument("--policies-dir", required=True)
    p = sub.add_parser("dockerfile")
    p.add_argument("dockerfile")
    p.add_argument("--context", required=True)
    p.add_argument("--stage")
    a = ap.parse_args()
    if a.cmd == "k8s":
        cmd_k8s(a.files)
    elif a.cmd == "istio":
        cmd_istio(a.files, a.rendered)
    elif a.cmd == "monitoring":
        cmd_monitoring(a.files, a.rendered, a.promtool, a.workdir)
    elif a.cmd == "extract":
        cmd_extract(a.rendered, a.outdir, a.policies_dir)
    else:
        cmd_dockerfile(a.dockerfile, a.context, a.stage)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
