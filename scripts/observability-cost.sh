#!/usr/bin/env bash
# Instructions per Check with metrics + audit + tracing (exporter off) vs bare, counted by
# callgrind over two run lengths (the difference cancels start-up). Needs valgrind.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "observability-cost: needs valgrind (apt-get install valgrind)"; exit 1; }
cargo build --quiet --release --locked --example observability_cost
bin=target/release/examples/observability_cost
out=$(mktemp -d)
count() { valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" "$2" 2>&1 | sed -n 's/.*Collected : //p'; }
per_check() { local a b; a=$(count "$1" 1000); b=$(count "$1" 3000); echo $(( (b - a) / 2000 )); }
bare=$(per_check bare); full=$(per_check full)
python3 -c "b,f=$bare,$full; print(f'instructions per Check: bare {b}, full {f}, ratio {f/b:.3f}')"
rm -rf "$out"
