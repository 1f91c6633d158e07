#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer of the safetensors reader and the YAML parsers.
#
#   Fuzz/run.sh [seconds per target, default 120]
#
# Builds the opt-in fuzz targets (FEDGATE_FUZZ=1 adds them to Package.swift) with
# `-sanitize=fuzzer,address` into .build-fuzz, seeds each corpus from the repository's own files,
# runs each target for the given time and prints libFuzzer's summary. Findings (crash-*, timeout-*,
# oom-*) land in Fuzz/findings/; a clean run leaves none. Not part of `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
export FEDGATE_FUZZ=1
# lld: gold fails on the fuzzer runtime here. -parse-as-library: the entry point is our own (see main.swift).
flags=(-c debug --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -use-ld=lld)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p Fuzz/findings

mkdir -p "$work/safetensors" "$work/policy"
cp Tests/FedGateTensorsTests/Fixtures/*.safetensors "$work/safetensors/"
cp policies/*.yaml examples/plans/*.yaml "$work/policy/"
cp examples/*/*.yaml "$work/policy/" 2>/dev/null || true

for target in SafeTensorsFuzz PolicyFuzz; do
  swift build "${flags[@]}" --product "$target"
done
bin=".build-fuzz/debug"
run() {
  local target="$1" corpus="$2"
  echo "== $target: $seconds s"
  "$bin/$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
    -artifact_prefix=Fuzz/findings/"$target"- -print_final_stats=1 2>&1 | grep -E "^#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|Done" || true
}
run SafeTensorsFuzz "$work/safetensors"
run PolicyFuzz "$work/policy"
if ls Fuzz/findings/* >/dev/null 2>&1; then echo "findings in Fuzz/findings:"; ls Fuzz/findings; exit 1; fi
echo "no findings"
