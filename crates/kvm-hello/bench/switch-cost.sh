#!/bin/sh
# The cost of a switch between lab 6's two VMs, from kvm-hello's own accounting: the loop's CPU
# time minus the guest time (CPU time inside KVM_RUN) is the host's work, per slice and per exit.
# A cooperative slice is one exit and one switch; a round-robin slice is ~70 exits and one switch.
# Usage: crates/kvm-hello/bench/switch-cost.sh [RUNS]   (needs jq; prints one line per run)
set -eu
runs=${1:-5}
cargo build -q --release -p kvm-hello --features solution
bin=target/release/kvm-hello
for policy in cooperative round-robin; do
    i=0
    while [ "$i" -lt "$runs" ]; do
        "$bin" --lab schedule --policy "$policy" --json 2>/dev/null | jq -r '.schedule
            | (.vms[0].guest_time_us + .vms[1].guest_time_us) as $guest
            | (.vms[0].exits + .vms[1].exits) as $exits
            | (.slices | length) as $n
            | "\(.policy): \($n) slices, \($exits) exits, host CPU \((.cpu_us - $guest) / $n * 10 | round / 10) us per slice, \((.cpu_us - $guest) / $exits * 100 | round / 100) us per exit"'
        i=$((i + 1))
    done
done
