#!/usr/bin/env bash
# Runs the criterion benchmarks (release build; not part of CI) and prints the ratios the
# README reports: each measurement divided by its baseline from the same run, using medians
# (robust to a busy machine).
#
#   scripts/bench.sh            # all benchmarks
#   scripts/bench.sh observability
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}
cargo bench --locked -p riskgate --bench decide -- --warm-up-time 2 --measurement-time 6 "$@"
python3 - "$target/criterion" <<'PY'
import json, os, sys
root = sys.argv[1]
def median(group, name):
    path = os.path.join(root, group, name, "new", "estimates.json")
    try:
        return json.load(open(path))["median"]["point_estimate"] / 1000.0  # ns -> us
    except OSError:
        return None
rows = [
    ("decide() vs Cedar is_authorized, example policies", "cedar", "decide_example", "is_authorized_example"),
    ("decide() vs Cedar is_authorized, + 1,000 generated policies", "cedar", "decide_1000_generated", "is_authorized_1000_generated"),
    ("decide() vs Cedar is_authorized, + 10,000 generated policies", "cedar", "decide_10000_generated", "is_authorized_10000_generated"),
    ("cache-hit Check vs the same decision without risk", "risk", "cache_hit_check", "core_decision_no_risk"),
    ("cache-miss Check vs the simulator's own GET latency", "risk", "cache_miss_check", "simulator_get_alone"),
    ("Check handler with metrics+audit+tracing vs bare", "observability", "check_with_metrics_audit_tracing", "check_bare"),
]
print("| measurement | median (us) | baseline (us) | ratio |")
print("|---|---|---|---|")
for label, group, a, b in rows:
    x, y = median(group, a), median(group, b)
    if x is None or y is None:
        continue
    print(f"| {label} | {x:.1f} | {y:.1f} | {x / y:.2f} |")
PY
