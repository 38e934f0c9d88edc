#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for a bounded time. Not part of CI: the instrumented
# build of the whole dependency tree is too slow cold; CI replays the committed corpora and
# every crashing input instead (tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [SECONDS]            # per target, default 60
#   FUZZ_TARGETS="path_route" scripts/fuzz.sh 300
#   FUZZ_BUILD="--release --sanitizer address" scripts/fuzz.sh   # slower build, ASan
#
# Installs cargo-fuzz (pinned) when missing. Works on stable through RUSTC_BOOTSTRAP=1.
# New corpus entries go to fuzz/corpus/<target>/ (hash names, git-ignored: commit the
# interesting ones renamed `seed-*`); a crash is written to fuzz/artifacts/<target>/ — commit
# it, and tests/fuzz_corpus.rs replays it as an ordinary (failing, until fixed) test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
targets=${FUZZ_TARGETS:-check_request path_route recommendation}
# Debug build, no sanitizer by default: riskgate forbids unsafe code, and this build takes
# minutes instead of most of an hour on a small machine.
read -r -a build <<<"${FUZZ_BUILD:---dev --sanitizer none}"
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

cargo fuzz build "${build[@]}"
failed=0
for target in $targets; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  echo "==> fuzz $target (${seconds} s)"
  if ! cargo fuzz run "${build[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
    echo "==> CRASH in $target: see fuzz/artifacts/$target/"
    failed=1
  fi
done
exit "$failed"
