//! `cargo xtask gradescope FILE.zip`: a Gradescope autograder. The zip holds `setup.sh` (installs
//! gcc, binutils and Rust when missing, then builds the kit so grading starts warm),
//! `run_autograder` (takes the lab files from the submission into the kit and runs `cargo grade
//! --gradescope`) and `kit/`, a pristine student copy exported from this repository, with the
//! hidden checks put back (students never see the package). Both scripts
//! take their root from `AUTOGRADER_ROOT` (default `/autograder`), so they can be tried anywhere.
//! Gradescope's standard containers have no `/dev/kvm`: there, the checks that need KVM are the
//! grader's to report as not run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kit::{self, LABS};
use crate::student_kit;

/// Bad usage: the file is not a `.zip`.
const STATUS_USAGE: u8 = 2;
/// Where the package is put together, under this repository's `target/`.
const WORK_DIR: &str = "gradescope";
/// The hidden checks, which the student copy replaces with a stand-in.
const HIDDEN_CHECKS: &str = "grader/src/checks/hidden.rs";
/// Executable scripts: rwxr-xr-x.
const EXECUTABLE: u32 = 0o755;

/// `cargo xtask gradescope FILE.zip`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The autograder to write, e.g. autograder.zip.
    file: PathBuf,
}

pub fn run(args: Args) -> u8 {
    match package(&args.file) {
        Ok(()) => {
            eprintln!("gradescope: wrote {}", args.file.display());
            0
        }
        Err((status, message)) => {
            eprintln!("gradescope: {message}");
            status
        }
    }
}

type Failure = (u8, String);

fn package(file: &Path) -> Result<(), Failure> {
    if file.extension().is_none_or(|ext| ext != "zip") {
        return Err((STATUS_USAGE, format!("{} must end in .zip", file.display())));
    }
    let root = kit::root();
    let work = root.join("target").join(WORK_DIR);
    let _ = std::fs::remove_dir_all(&work);
    student_kit::export(&root, &work.join("kit"), false)?;
    // Official grading runs the hidden checks: the package (which students never see) holds them.
    let hidden = Path::new(HIDDEN_CHECKS);
    std::fs::copy(root.join(hidden), work.join("kit").join(hidden))
        .map_err(|err| (kit::status::IO, kit::io_error("copy", &root.join(hidden), err)))?;
    write_script(&work.join("setup.sh"), SETUP)?;
    write_script(&work.join("run_autograder"), &run_autograder())?;
    let file = std::path::absolute(file).map_err(|err| (kit::status::IO, kit::io_error("find", file, err)))?;
    let _ = std::fs::remove_file(&file);
    let out = Command::new("zip")
        .current_dir(&work)
        .args(["-q", "-r", "-X"])
        .arg(&file)
        .args(["setup.sh", "run_autograder", "kit"])
        .output()
        .map_err(|err| {
            (
                kit::status::IO,
                format!("cannot run zip (install it: apt-get install zip): {err}"),
            )
        })?;
    if !out.status.success() {
        return Err((
            kit::status::IO,
            format!("zip failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    Ok(())
}

fn write_script(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|err| (kit::status::IO, kit::io_error("write", path, err)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(EXECUTABLE))
        .map_err(|err| (kit::status::IO, kit::io_error("make executable", path, err)))
}

/// `run_autograder`, with the lab list of this kit.
fn run_autograder() -> String {
    let labs: Vec<&str> = LABS.iter().map(|lab| lab.dir).collect();
    RUN_AUTOGRADER.replace("{labs}", &labs.join(" "))
}

const SETUP: &str = r#"#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image: the tools, then the kit's build.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
if ! command -v gcc >/dev/null || ! command -v objcopy >/dev/null; then
    apt-get update && apt-get install -y gcc binutils curl
fi
if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
fi
cd "$ROOT/source/kit"
cargo build --locked -p grader -p xtask
"#;

const RUN_AUTOGRADER: &str = r#"#!/usr/bin/env bash
# Gradescope runs this for every submission: only the lab files are taken from it, into the
# kit's pristine copy; a lab missing from the submission is graded as its untouched stub.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
export PATH="$HOME/.cargo/bin:$PATH"
KIT="$ROOT/source/kit"
SUBMISSION="$ROOT/submission"
mkdir -p "$ROOT/results"
for lab in {labs}; do
    target="$KIT/labs/$lab/src/lib.rs"
    cp "$KIT/xtask/stubs/$lab.rs" "$target"
    for candidate in "$SUBMISSION/labs/$lab/src/lib.rs" "$SUBMISSION/$lab/src/lib.rs" "$SUBMISSION/$lab/lib.rs" "$SUBMISSION/$lab.rs"; do
        if [ -f "$candidate" ]; then cp "$candidate" "$target"; break; fi
    done
done
cd "$KIT"
if [ ! -e /dev/kvm ]; then
    echo "run_autograder: this machine has no /dev/kvm: the checks that need KVM cannot run here" >&2
fi
cargo grade --gradescope "$ROOT/results/results.json"
"#;
