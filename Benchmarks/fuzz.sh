#!/usr/bin/env bash
# The long fuzz run: the suite's fuzz tests (Tests/TandemFuzzTests) with many more inputs per parser (CIDRs and
# addresses, selectors, YAML manifests, CNI configurations through the plugin's whole path on an in-memory store).
# Usage (from the repository root): bash Benchmarks/fuzz.sh [INPUTS_PER_PARSER] [SEED]
set -euo pipefail
inputs="${1:-500000}"
seed="${2:-8015331}"
swift build --build-tests >/dev/null
TANDEM_FUZZ_ITERATIONS="$inputs" TANDEM_FUZZ_SEED="$seed" \
  swift test --skip-build --filter TandemFuzzTests 2>&1 | grep -E "^fuzz |Test run with"
