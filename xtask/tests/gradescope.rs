//! `cargo xtask gradescope`: the autograder zip, unpacked under a made-up root
//! (`AUTOGRADER_ROOT`), set up and run on a solved submission: full marks in results.json.
#![cfg(feature = "instructor")]

mod common;

use std::process::Command;

use common::*;

#[test]
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
        let out = Command::new(source.join(script))
            .env("AUTOGRADER_ROOT", &root)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .expect("the script runs");
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results: serde_json::Value = serde_json::from_str(&read(&root.join("results/results.json"))).unwrap();
    let tests = results["tests"].as_array().expect("tests");
    assert!(tests.len() >= 40, "{results}");
    assert!(results["max_score"].as_f64().unwrap() >= 90.0, "{results}");
    assert_eq!(results["score"], results["max_score"], "{results}");
}
