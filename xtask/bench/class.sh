#!/usr/bin/env bash
# Grading speed of a class: N made-up students (default 20), each with every lab solved (the
# reference solutions, inlined into the lab files as a student would write them), graded by
# `cargo xtask grade-submissions` with --jobs 1, then --jobs 2, from a cold start of the class's
# copies (the judge and the kit's untouched crates are built once per class). Prints the seconds
# in all and per submission for each. Needs python3 (to write the solved files) and the jail
# (bubblewrap). Usage: xtask/bench/class.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
students=${1:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$top" "$work/class" "$students" <<'PY'
import os, re, sys
top, class_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
labs = sorted(d for d in os.listdir(os.path.join(top, "labs")) if os.path.isdir(os.path.join(top, "labs", d)))
for i in range(n):
    for lab in labs:
        lib = open(os.path.join(top, "labs", lab, "src/lib.rs")).read()
        solution = open(os.path.join(top, "labs", lab, "src/solution.rs")).read()
        solution = re.sub(r"^//!.*\n", "", solution, flags=re.M)
        lib = lib.replace('#[cfg(not(feature = "solution"))]', "#[cfg(any())]")
        lib = lib.replace('#[cfg(feature = "solution")]\nmod solution;', "mod solution {\n" + solution + "\n}")
        lib = lib.replace('#[cfg(feature = "solution")]\npub use solution::*;', "pub use solution::*;")
        # A line of its own, so that no two students' files are the same.
        lib += f"\n// student {i}\n"
        path = os.path.join(class_dir, f"student{i:02}", "labs", lab, "src")
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "lib.rs"), "w").write(lib)
PY

cd "$top"
cargo build --quiet -p xtask
for jobs in 1 2; do
    rm -rf target/grade-submissions
    started=$(date +%s.%N)
    cargo xtask grade-submissions "$work/class" --csv "$work/grades-$jobs.csv" --jobs "$jobs" 2>"$work/log-$jobs"
    ended=$(date +%s.%N)
    seconds=$(echo "$ended - $started" | bc)
    full=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $col["error"] == "" && $col["total"] == $col["max"] { n++ } END { print n + 0 }' "$work/grades-$jobs.csv")
    printf -- '--jobs %s: %d students in %.0f s, %.1f s per submission (%d of %d at full marks), load %s\n' \
        "$jobs" "$students" "$seconds" "$(echo "$seconds / $students" | bc -l)" "$full" "$students" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
done
