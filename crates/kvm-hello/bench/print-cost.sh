#!/usr/bin/env bash
# Lab 5's measurement: printing a 4000-byte line byte by byte (4000 exits on port 0xE9) against
# one print_str hypercall (1 exit), whole kvm-hello processes, medians of hyperfine runs.
# Needs hyperfine and jq. Usage: crates/kvm-hello/bench/print-cost.sh [RUNS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
runs=${1:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for guest in print-bytes print-str; do
    as --64 "$top/guest/corpus/$guest.S" -o "$work/$guest.o"
    objcopy -O binary -j .text "$work/$guest.o" "$work/$guest.bin"
done
cargo build --quiet --release --manifest-path "$top/Cargo.toml" -p kvm-hello --features solution
kvm_hello="$top/target/release/kvm-hello"

hyperfine -N --warmup 3 --runs "$runs" --output=null --export-json "$work/bench.json" \
    "$kvm_hello --lab hypercalls --guest $work/print-bytes.bin" "$kvm_hello --lab hypercalls --guest $work/print-str.bin"
bytes=$(jq '.results[0].median' "$work/bench.json")
str=$(jq '.results[1].median' "$work/bench.json")
awk -v b="$bytes" -v s="$str" 'BEGIN {
    printf "median: byte by byte (4001 exits) %.1f ms, print_str (2 exits) %.1f ms\n", b * 1000, s * 1000
    printf "the 3999 extra exits cost %.1f ms: %.2f µs per exit\n", (b - s) * 1000, (b - s) * 1e6 / 3999
}'
