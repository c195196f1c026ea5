#!/usr/bin/env bash
# Measures kvm-hello against the C floor (floor-vmm.c) on the 56,001-exit guest (greet4000.S):
# whole processes, output to /dev/null, median of many runs. Needs hyperfine and jq
# (apt-get install hyperfine jq). Usage: crates/kvm-hello/bench/run.sh [RUNS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
runs=${1:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gcc -O2 -o "$work/floor-vmm" "$here/floor-vmm.c"
as --64 "$here/greet4000.S" -o "$work/greet4000.o"
objcopy -O binary -j .text "$work/greet4000.o" "$work/greet4000.bin"
cargo build --quiet --release --manifest-path "$top/Cargo.toml" -p kvm-hello --features solution
kvm_hello="$top/target/release/kvm-hello"

hyperfine -N --warmup 3 --runs "$runs" --output=null --export-json "$work/bench.json" \
    "$work/floor-vmm $work/greet4000.bin" "$kvm_hello --guest $work/greet4000.bin"
floor=$(jq '.results[0].median' "$work/bench.json")
vmm=$(jq '.results[1].median' "$work/bench.json")
awk -v f="$floor" -v k="$vmm" 'BEGIN { printf "median: floor-vmm %.3f s, kvm-hello %.3f s, ratio %.3f\n", f, k, k / f }'
