#!/usr/bin/env python3
"""Adds riskgate's settings to an existing Istio mesh config without dropping what is there.

Helm (`-f values.yaml`) and `istioctl install -f` replace a list such as
`meshConfig.extensionProviders` as a whole: applying deploy/istio/istiod-values.yaml or
mesh-config.yaml on its own would remove every other extension provider (tracing, other
authorizers). This script merges instead: it reads the mesh config in force, in any of its three
forms, and prints the same document with

  * the `riskgate` extension provider of deploy/istio/mesh-config.yaml appended to
    `extensionProviders` (every other provider kept, in order; an existing `riskgate` entry is
    replaced in place),
  * `pathNormalization` set when absent (an existing MERGE_SLASHES or DECODE_AND_MERGE_SLASHES is
    kept; any other value is an error: riskgate denies non-canonical paths),
  * `defaultConfig.gatewayTopology.numTrustedProxies` set when absent (an existing value is kept:
    `riskgate validate --istio-config` compares it with client_address.xff_trusted_hops).

Forms (detected from the document):
  the `istio` ConfigMap      kubectl get configmap istio -n istio-system -o yaml > mesh.yaml
  istiod Helm values         helm get values istiod -n istio-system -o yaml > values.yaml
  an IstioOperator           the file you install with istioctl

  scripts/istio-add-provider.py mesh.yaml > merged.yaml    # then kubectl apply / helm upgrade -f
  scripts/istio-add-provider.py --check mesh.yaml           # exit 1 when a merge would change it

Run it with the repo's .venv Python (PyYAML). Comments of the input are not kept.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "deploy" / "istio" / "mesh-config.yaml"
PROVIDER = "riskgate"
CANONICAL = ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")


class MergeError(Exception):
    """The input cannot take riskgate's settings as they are."""


def wanted() -> dict:
    """riskgate's meshConfig, from the shipped IstioOperator overlay."""
    doc = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))
    return doc["spec"]["meshConfig"]


def merge_mesh(mesh: dict | None, want: dict) -> dict:
    """`mesh` with riskgate's provider, path normalisation and gateway topology added."""
    out = copy.deepcopy(mesh) if mesh else {}
    if not isinstance(out, dict):
        raise MergeError("the mesh config is not a mapping")
    ours = next(p for p in want["extensionProviders"] if p.get("name") == PROVIDER)
    providers = out.get("extensionProviders") or []
    if not isinstance(providers, list):
        raise MergeError("extensionProviders is not a list")
    names = [p.get("name") for p in providers if isinstance(p, dict)]
    if names.count(PROVIDER) > 1:
        raise MergeError(f"extensionProviders names `{PROVIDER}` more than once")
    if PROVIDER in names:
        providers = [copy.deepcopy(ours) if isinstance(p, dict) and p.get("name") == PROVIDER else p
                     for p in providers]
    else:
        providers = [*providers, copy.deepcopy(ours)]
    out["extensionProviders"] = providers
    norm = (out.get("pathNormalization") or {}).get("normalization")
    if norm is None:
        out["pathNormalization"] = copy.deepcopy(want["pathNormalization"])
    elif norm not in CANONICAL:
        raise MergeError(f"pathNormalization.normalization is {norm!r}; riskgate needs one of "
                         f"{', '.join(CANONICAL)} (it denies non-canonical paths)")
    topology_want = want.get("defaultConfig", {}).get("gatewayTopology", {})
    default_config = out.setdefault("defaultConfig", {})
    topology = default_config.setdefault("gatewayTopology", {})
    for key, value in topology_want.items():
        topology.setdefault(key, value)
    return out


def merge_document(doc: Any, want: dict) -> Any:
    """The document (ConfigMap, Helm values or IstioOperator) with its mesh config merged."""
    if not isinstance(doc, dict):
        raise MergeError("the input is not a YAML mapping")
    out = copy.deepcopy(doc)
    if out.get("kind") == "ConfigMap":
        data = out.setdefault("data", {})
        mesh = yaml.safe_load(data.get("mesh") or "") or {}
        data["mesh"] = yaml.dump(merge_mesh(mesh, want), Dumper=_Dumper, sort_keys=False)
        # kubectl get -o yaml: server-side fields would make `kubectl apply` fail or conflict
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            (out.get("metadata") or {}).pop(key, None)
        return out
    if out.get("kind") == "IstioOperator":
        spec = out.setdefault("spec", {})
        spec["meshConfig"] = merge_mesh(spec.get("meshConfig"), want)
        return out
    if "apiVersion" in out or "kind" in out:
        raise MergeError(f"kind {out.get('kind')!r} holds no mesh config (ConfigMap `istio`, "
                         f"Helm values or IstioOperator)")
    out["meshConfig"] = merge_mesh(out.get("meshConfig"), want)
    return out


def mesh_of(doc: dict) -> Any:
    """The mesh config of a document, parsed (for --check)."""
    if doc.get("kind") == "ConfigMap":
        return yaml.safe_load((doc.get("data") or {}).get("mesh") or "") or {}
    if doc.get("kind") == "IstioOperator":
        return (doc.get("spec") or {}).get("meshConfig") or {}
    return doc.get("meshConfig") or {}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's `mesh`) as literal blocks, readable in a diff."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar(
    "tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="the mesh config in force (ConfigMap, Helm values or IstioOperator)")
    ap.add_argument("--check", action="store_true", help="exit 1 when the merge would change it")
    args = ap.parse_args()
    try:
        doc = yaml.safe_load(Path(args.file).read_text(encoding="utf-8"))
        merged = merge_document(doc, wanted())
    except (OSError, yaml.YAMLError, MergeError) as e:
        print(f"istio-add-provider: {args.file}: {e}", file=sys.stderr)
        return 2
    if args.check:
        if mesh_of(merged) != mesh_of(doc):
            print(f"istio-add-provider: {args.file}: riskgate's settings are missing or differ",
                  file=sys.stderr)
            return 1
        return 0
    yaml.dump(merged, sys.stdout, Dumper=_Dumper, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
