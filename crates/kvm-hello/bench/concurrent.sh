#!/usr/bin/env bash
# Load test of the watchdog's CPU-time budget: N kvm-hello processes (default 60) run the
# 56,001-exit guest (greet4000.S, about 0.6 s of vCPU time each) at the same time, at the default
# --timeout; every one must succeed however long the machine takes to serve them all.
# Prints the statuses, the wall-clock time of the whole batch and the slowest run.
# Usage: crates/kvm-hello/bench/concurrent.sh [N] [extra kvm-hello options...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
runs=${1:-60}
shift || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

as --64 "$here/greet4000.S" -o "$work/greet4000.o"
objcopy -O binary -j .text "$work/greet4000.o" "$work/greet4000.bin"
cargo build --quiet --release --manifest-path "$top/Cargo.toml" -p kvm-hello --features solution
kvm_hello="$top/target/release/kvm-hello"

started=$(date +%s.%N)
for i in $(seq "$runs"); do
    (
        t0=$(date +%s.%N)
        status=0
        "$kvm_hello" --guest "$work/greet4000.bin" "$@" >/dev/null 2>"$work/$i.err" || status=$?
        t1=$(date +%s.%N)
        echo "$status $(echo "$t1 - $t0" | bc)" >"$work/$i.result"
    ) &
done
wait
ended=$(date +%s.%N)

cat "$work"/*.result | awk '{ count[$1]++; if ($2 > slowest) slowest = $2 }
    END { for (s in count) printf "status %s: %d runs\n", s, count[s]; printf "slowest run: %.1f s\n", slowest }'
echo "batch: $runs runs in $(echo "$ended - $started" | bc) s of wall-clock time"
failed=$(grep -lv '^0 ' "$work"/*.result | wc -l)
if [ "$failed" -ne 0 ]; then
    echo "$failed runs failed; first message:" >&2
    for f in "$work"/*.result; do
        if ! grep -q '^0 ' "$f"; then cat "${f%.result}.err" >&2; break; fi
    done
    exit 1
fi
