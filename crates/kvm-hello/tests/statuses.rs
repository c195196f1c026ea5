//! Every exit status kvm-hello can reach on this machine, and the hostile-guest corpus.
#![cfg(feature = "solution")]

mod common;

use std::time::{Duration, Instant};

use common::{image_file, kvm_hello, require_kvm};
use predicates::prelude::*;

/// Each corpus guest ends with the status, output and message its header promises, in time.
#[test]
fn every_corpus_guest_ends_as_its_header_says() {
    require_kvm();
    const TIMEOUT_SECS: f64 = 1.0;
    for guest in guests::CORPUS {
        let image = image_file(&format!("{}.bin", guest.name), guest.image);
        let started = Instant::now();
        let mut run = kvm_hello();
        run.args([
            "--mode",
            guest.mode(),
            "--timeout",
            &TIMEOUT_SECS.to_string(),
            "--guest",
        ])
        .arg(&image);
        let out = run.output().expect("kvm-hello runs");
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(guest.expected_status()),
            "{}: {stderr}",
            guest.name
        );
        assert!(
            elapsed < Duration::from_secs_f64(TIMEOUT_SECS + 2.0),
            "{} took {elapsed:?}",
            guest.name
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{}: one line on stderr, got {stderr:?}",
            guest.name
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", guest.name);
        if let Some(needle) = guest.expected_stderr() {
            assert!(
                stderr.contains(needle),
                "{}: expected {needle:?} in {stderr:?}",
                guest.name
            );
        }
        if let Some(stdout) = guest.expected_stdout() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                stdout,
                "{}",
                guest.name
            );
        }
    }
    assert!(
        guests::CORPUS.len() >= 12,
        "the corpus has {} guests",
        guests::CORPUS.len()
    );
}

#[test]
fn status_1_when_the_result_is_wrong_and_json_says_so() {
    require_kvm();
    let guest = guests::CORPUS
        .iter()
        .find(|g| g.name == "wrong-rax")
        .expect("wrong-rax guest");
    let image = image_file("wrong-rax.json.bin", guest.image);
    let out = kvm_hello()
        .arg("--json")
        .arg("--guest")
        .arg(&image)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["rax"], 41);
    assert_eq!(report["memory_0x400"], 42);
    assert_eq!(report["error"]["kind"], "wrong_result");
}

#[test]
fn status_2_for_bad_usage_and_bad_images() {
    let empty = image_file("empty.bin", b"");
    let oversized = image_file("oversized.bin", &vec![0xf4; kit_common::MAX_IMAGE_SIZE + 1]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--mode".into(), "vm86".into()], "unknown mode 'vm86'"),
        (
            vec!["--timeout".into(), "soon".into()],
            "--timeout takes a number of seconds",
        ),
        (
            vec!["--timeout".into(), "0".into()],
            "--timeout takes a number of seconds",
        ),
        (
            vec![
                "--mode".into(),
                "long".into(),
                "--mode".into(),
                "real".into(),
            ],
            "--mode is given twice",
        ),
        (vec!["--bogus".into()], "unknown option '--bogus'"),
        (
            vec!["--guest".into(), "/nonexistent/guest.bin".into()],
            "cannot read guest image '/nonexistent/guest.bin'",
        ),
        (
            vec!["--guest".into(), empty.display().to_string()],
            "is empty",
        ),
        (
            vec!["--guest".into(), oversized.display().to_string()],
            "is 8193 bytes; at most 8192 bytes fit",
        ),
    ];
    for (args, needle) in cases {
        kvm_hello()
            .args(&args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(
                predicate::str::starts_with("kvm-hello: ").and(predicate::str::contains(needle)),
            )
            .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    }
}

#[test]
fn status_3_when_dev_kvm_is_not_kvm() {
    // /dev/kvm replaced by /dev/null in a private mount namespace: opening works, the API
    // version ioctl does not.
    let bin = assert_cmd::cargo::cargo_bin!("kvm-hello");
    let script = format!("mount --bind /dev/null /dev/kvm && exec {}", bin.display());
    let probe = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", "mount --bind /dev/null /dev/kvm"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        eprintln!(
            "SKIPPED status_3_when_dev_kvm_is_not_kvm: this user cannot make a private mount namespace (unshare --mount)"
        );
        return;
    }
    let mut cmd = assert_cmd::Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", &script])
        .timeout(Duration::from_secs(30));
    cmd.assert().code(3).stderr(
        predicate::str::contains("/dev/kvm").and(predicate::str::contains("book: Troubleshooting")),
    );
}

#[test]
fn status_5_stops_a_spinning_guest_at_a_fractional_timeout() {
    require_kvm();
    let guest = guests::CORPUS
        .iter()
        .find(|g| g.name == "spin-long")
        .expect("spin-long guest");
    let image = image_file("spin.bin", guest.image);
    let started = Instant::now();
    kvm_hello()
        .args(["--timeout", "0.3", "--guest"])
        .arg(&image)
        .assert()
        .code(5)
        .stderr(
            predicate::str::contains("did not halt within 0.3 s")
                .and(predicate::str::contains("RIP 0x0")),
        );
    assert!(started.elapsed() < Duration::from_secs(2));
}
