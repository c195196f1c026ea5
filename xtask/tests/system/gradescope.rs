//! `cargo xtask gradescope`: the autograder zip, unpacked under a made-up root
//! (`AUTOGRADER_ROOT`), set up and run on a solved submission: full marks in results.json; and,
//! as in Gradescope's containers, without `/dev/kvm` (hidden in a mount namespace): the checks
//! that need KVM are reported not run, never failed, and the others still pass.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn the_autograder_gives_a_solved_submission_full_marks() {
    let dir = scratch("gradescope");
    let zip = dir.join("autograder.zip");
    let out = xtask(&["gradescope", zip.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let root = dir.join("autograder");
    let source = root.join("source");
    std::fs::create_dir_all(&source).unwrap();
    let unzip = Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&source)
        .status()
        .expect("unzip runs");
    assert!(unzip.success());
    for script in ["setup.sh", "run_autograder"] {
        assert!(source.join(script).is_file(), "the zip has no {script} at its top");
    }
    assert!(!source.join("kit/labs/lab1-memory/src/solution.rs").exists());

    // A submission: the lab files a student solved, in the kit's layout.
    let solved = export(&dir.join("solved"));
    for lab in LABS {
        solve(&solved, lab);
        let to = root.join(format!("submission/labs/{lab}/src/lib.rs"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(solved.join(format!("labs/{lab}/src/lib.rs")), to).unwrap();
    }
    for script in ["setup.sh", "run_autograder"] {
        let out = autograder(&source.join(script), &root, &[]);
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results = results(&root);
    let tests = results["tests"].as_array().expect("tests");
    assert!(tests.len() >= 40, "{results}");
    assert!(results["max_score"].as_f64().unwrap() >= 90.0, "{results}");
    assert_eq!(results["score"], results["max_score"], "{results}");

    // Gradescope's containers have no /dev/kvm: here it is hidden behind /dev/null.
    std::fs::remove_file(root.join("results/results.json")).unwrap();
    let run = source.join("run_autograder");
    let hide_kvm = format!("mount --bind /dev/null /dev/kvm && exec {}", run.display());
    let mut args = unshare_mount_namespace();
    args.extend(["sh", "-c", &hide_kvm]);
    let out = autograder(Path::new("unshare"), &root, &args);
    assert!(
        out.status.success(),
        "run_autograder without /dev/kvm failed (it needs unshare and a mount namespace): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = self::results(&root);
    let tests = results["tests"].as_array().expect("tests");
    let mut not_run = 0;
    let mut passed = 0;
    for test in tests {
        let output = test["output"].as_str().unwrap_or_default();
        if test["status"] == "passed" {
            passed += 1;
        } else {
            assert_eq!(
                test["max_score"].as_f64(),
                Some(0.0),
                "a check counts without KVM: {test}"
            );
            assert!(test["status"].is_null(), "a check without KVM has a status: {test}");
            assert!(output.contains("no usable KVM"), "not run without the reason: {test}");
            not_run += 1;
        }
    }
    assert!(not_run >= 20, "only {not_run} checks not run without KVM: {results}");
    assert!(passed >= 15, "only {passed} checks pass without KVM: {results}");
    assert!(
        tests
            .iter()
            .any(|t| t["name"].as_str().is_some_and(|n| n.contains("lab2")) && t["status"] == "passed"),
        "lab 2 is not graded without KVM: {results}"
    );
    assert_eq!(results["score"], results["max_score"], "{results}");
}

/// One of the autograder's scripts (or a command that runs one), with the made-up root.
fn autograder(program: &Path, root: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("AUTOGRADER_ROOT", root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("the script runs")
}

/// unshare's options for a private mount namespace: root needs no user namespace.
fn unshare_mount_namespace() -> Vec<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0);
    if root {
        vec!["--mount"]
    } else {
        vec!["--mount", "--map-root-user"]
    }
}

fn results(root: &Path) -> serde_json::Value {
    serde_json::from_str(&read(&root.join("results/results.json"))).unwrap()
}
