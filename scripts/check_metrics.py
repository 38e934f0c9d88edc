#!/usr/bin/env python3
"""Checks a riskgate /metrics scrape with a real Prometheus parser (tests/metrics_exposition.rs).

  check_metrics.py --openmetrics OM.txt --text TEXT.txt [--dashboard D.json] [--rules R.yaml]
                   [--require 'name{label="value",...}']...

* OM.txt (served as application/openmetrics-text) must parse with prometheus_client's strict
  OpenMetrics parser, TEXT.txt (served as text/plain; version=0.0.4) with its text-format parser,
  and both must hold the same samples (names and label sets).
* Every series selector in the dashboard's queries and template variables and in the
  PrometheusRule's exprs (metric names riskgate_*, grpc_server_*, process_*) must match at least
  one sample: same name, and every `label="value"` matcher satisfied (regex and negative matchers,
  and values holding a Grafana `$variable`, are not checked).
* Every --require selector must match a sample the same way (a label named with an empty value,
  `label=""`, only has to be present).

Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

SELECTOR = re.compile(r"\b((?:riskgate|grpc_server|process)_[A-Za-z0-9_]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def samples(families) -> set[tuple[str, frozenset]]:
    return {(s.name, frozenset(s.labels.items())) for f in families for s in f.samples}


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    out = []
    for m in SELECTOR.finditer(expr):
        matchers = MATCHER.findall(m.group(2) or "")
        out.append((m.group(1), matchers))
    return out


def matches(have: set[tuple[str, frozenset]], name: str, matchers) -> bool:
    for sample_name, labels in have:
        if sample_name != name:
            continue
        d = dict(labels)
        if all(
            (value == "" and label in d) or d.get(label) == value
            for label, op, value in matchers
            if op == "=" and "$" not in value
        ):
            return True
    return False


def exprs_of(dashboard: str | None, rules: str | None) -> list[tuple[str, str]]:
    found = []
    if dashboard:
        with open(dashboard, encoding="utf-8") as f:
            d = json.load(f)
        for panel in d.get("panels", []):
            for t in panel.get("targets", []):
                if "expr" in t:
                    found.append((f"dashboard panel {panel.get('title')!r}", t["expr"]))
        for var in (d.get("templating") or {}).get("list", []):
            q = var.get("query")
            if isinstance(q, dict):
                q = q.get("query")
            if var.get("type") == "query" and isinstance(q, str):
                found.append((f"dashboard variable {var.get('name')!r}", q))
    if rules:
        with open(rules, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                for group in ((doc or {}).get("spec") or {}).get("groups", []):
                    for rule in group.get("rules", []):
                        who = rule.get("alert") or rule.get("record")
                        found.append((f"rule {who!r}", str(rule.get("expr", ""))))
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--openmetrics", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--dashboard")
    ap.add_argument("--rules")
    ap.add_argument("--require", action="append", default=[])
    a = ap.parse_args()
    problems = []
    with open(a.openmetrics, encoding="utf-8") as f:
        om_text = f.read()
    with open(a.text, encoding="utf-8") as f:
        plain_text = f.read()
    try:
        om = samples(parse_openmetrics(om_text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"FAILED  OpenMetrics scrape does not parse: {e}")
        return 1
    try:
        plain = samples(parse_text(plain_text))
    except Exception as e:
        print(f"FAILED  Prometheus text scrape does not parse: {e}")
        return 1
    if om != plain:
        only_om = sorted({n for n, _ in om - plain})[:10]
        only_plain = sorted({n for n, _ in plain - om})[:10]
        # the two scrapes are a moment apart: live gauges and process_* may move
        moving = ("process_", "riskgate_risk_cache_entries")
        only_om = [n for n in only_om if not n.startswith(moving)]
        only_plain = [n for n in only_plain if not n.startswith(moving)]
        if only_om or only_plain:
            problems.append(f"the two formats disagree: only in OpenMetrics {only_om}, "
                            f"only in text {only_plain}")
    checked = 0
    for where, expr in exprs_of(a.dashboard, a.rules):
        for name, matchers in selectors(expr):
            checked += 1
            if not matches(om, name, matchers):
                problems.append(f"{where}: no series {name}{{{', '.join(''.join(m) for m in matchers)}}} "
                                f"in a fresh process's scrape")
    for req in a.require:
        sel = selectors(req)
        if not sel or not matches(om, sel[0][0], sel[0][1]):
            problems.append(f"required series {req} missing")
    for p in problems:
        print(f"FAILED  {p}")
    print(f"{len(om)} samples parsed (OpenMetrics and text), {checked} selectors and "
          f"{len(a.require)} required series checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
