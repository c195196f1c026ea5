//! Every exit status kvm-hello can reach on this machine, and the hostile-guest corpus.
#![cfg(feature = "solution")]

mod common;

use std::time::{Duration, Instant};

use common::{image_file, kvm_hello, require_kvm, run_bound};
use predicates::prelude::*;

/// Each corpus guest ends with the status, output and message its header promises, in time.
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn every_corpus_guest_ends_as_its_header_says() {
    require_kvm();
    const TIMEOUT_SECS: f64 = 1.0;
    for guest in guests::CORPUS {
        let image = image_file(&format!("{}.bin", guest.name), guest.image);
        let started = Instant::now();
        let mut run = kvm_hello();
        match guest.lab() {
            Some(lab) => run.args(["--lab", lab]),
            None => run.args(["--mode", guest.mode()]),
        };
        run.args(["--timeout", &TIMEOUT_SECS.to_string(), "--guest"])
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
        assert!(elapsed < run_bound(TIMEOUT_SECS), "{} took {elapsed:?}", guest.name);
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
            assert_eq!(String::from_utf8_lossy(&out.stdout), stdout, "{}", guest.name);
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
            vec!["--mode".into(), "long".into(), "--mode".into(), "real".into()],
            "--mode is given twice",
        ),
        (vec!["--bogus".into()], "unknown option '--bogus'"),
        (vec!["--explain".into(), "--json".into()], "choose one"),
        (vec!["--walk".into(), "0x400".into()], "go with --explain"),
        (
            vec!["--guest".into(), std::env::temp_dir().display().to_string()],
            "cannot read guest image",
        ),
        (
            vec!["--guest".into(), "/nonexistent/guest.bin".into()],
            "cannot read guest image '/nonexistent/guest.bin'",
        ),
        (vec!["--guest".into(), empty.display().to_string()], "is empty"),
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
            .stderr(predicate::str::starts_with("kvm-hello: ").and(predicate::str::contains(needle)))
            .stderr(predicate::function(|s: &str| s.lines().count() == 1));
    }
}

/// Runs kvm-hello through `wrapper` (a command that hides or locks /dev/kvm), or says why it
/// cannot here.
fn run_with_kvm_hidden(wrapper: &[&str], probe: &[&str]) -> Option<assert_cmd::assert::Assert> {
    let works = std::process::Command::new(probe[0]).args(&probe[1..]).output();
    if !works.is_ok_and(|out| out.status.success()) {
        eprintln!("SKIPPED: {probe:?} is not allowed for this user, so this case cannot be staged here");
        return None;
    }
    let bin = assert_cmd::cargo::cargo_bin!("kvm-hello");
    let mut cmd = assert_cmd::Command::new(wrapper[0]);
    cmd.args(&wrapper[1..]).arg(bin).timeout(Duration::from_secs(30));
    Some(cmd.assert())
}

fn one_line_with(needles: &'static [&'static str]) -> impl predicates::Predicate<str> {
    predicate::function(move |s: &str| s.lines().count() == 1 && needles.iter().all(|n| s.contains(n)))
}

#[test]
fn status_3_when_dev_kvm_is_not_kvm() {
    // /dev/kvm replaced by /dev/null in a private mount namespace: it opens, but is not KVM.
    let wrapper = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        "mount --bind /dev/null /dev/kvm && exec \"$0\"",
    ];
    if let Some(run) = run_with_kvm_hidden(&wrapper, &["unshare", "--mount", "true"]) {
        run.code(3).stdout("").stderr(one_line_with(&[
            "API version -1",
            "not a usable KVM device",
            "book: Troubleshooting",
        ]));
    }
}

#[test]
fn status_3_when_there_is_no_dev_kvm() {
    let wrapper = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$0\"",
    ];
    if let Some(run) = run_with_kvm_hidden(&wrapper, &["unshare", "--mount", "true"]) {
        run.code(3).stdout("").stderr(one_line_with(&[
            "there is no /dev/kvm",
            "modprobe",
            "book: Troubleshooting",
        ]));
    }
}

#[test]
fn status_3_when_dev_kvm_is_not_ours() {
    // The nobody user has no access to /dev/kvm (crw------- or crw-rw---- root:kvm).
    let wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    if let Some(run) = run_with_kvm_hidden(
        &wrapper,
        &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "true"],
    ) {
        run.code(3).stdout("").stderr(one_line_with(&[
            "Permission denied",
            "kvm group",
            "book: Troubleshooting",
        ]));
    }
}

#[test]
fn an_instruction_kvm_cannot_emulate_is_an_internal_error_with_its_suberror() {
    require_kvm();
    // MOVAPS in real mode: PVM hosts emulate real mode and give up on SSE; VMX hosts run it and
    // take a #UD through the real-mode IVT, which loops until the watchdog stops it.
    let image = image_file("movaps-real.bin", &[0x0f, 0x28, 0xc1]);
    let run = kvm_hello()
        .args(["--mode", "real", "--timeout", "5", "--guest"])
        .arg(&image)
        .assert();
    if common::is_pvm_host() {
        run.code(4).stderr(one_line_with(&[
            "KVM_EXIT_INTERNAL_ERROR, suberror 1: KVM could not emulate",
            "at RIP 0x",
        ]));
    } else {
        run.stderr(predicate::function(|s: &str| s.lines().count() == 1));
    }
}

/// Random bytes as guests: every run ends in time, with a status a guest can cause, in one line.
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_hundred_random_images_end_in_time_without_a_panic() {
    require_kvm();
    const IMAGES: u64 = 120;
    const TIMEOUT: f64 = 0.3;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let cases: Vec<(u64, &str, Vec<u8>)> = (0..IMAGES)
        .map(|i| {
            let len = 1 + (next() % 96) as usize;
            let image: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            (i, ["long", "protected", "real"][(i % 3) as usize], image)
        })
        .collect();
    let run_one = |(i, mode, image): &(u64, &str, Vec<u8>)| {
        let path = image_file(&format!("random-{i}.bin"), image);
        let started = Instant::now();
        let out = kvm_hello()
            .args(["--mode", mode, "--timeout", &TIMEOUT.to_string(), "--guest"])
            .arg(&path)
            .output()
            .expect("kvm-hello runs");
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1 | 4 | 5)),
            "image {i} ({mode}, {image:02x?}): status {code:?}: {stderr}"
        );
        assert!(elapsed < run_bound(TIMEOUT), "image {i} ({mode}) took {elapsed:?}");
        assert_eq!(stderr.lines().count(), 1, "image {i} ({mode}): {stderr:?}");
        assert!(
            !stderr.contains("panicked") && stderr.starts_with("kvm-hello: "),
            "image {i}: {stderr}"
        );
        code
    };
    let codes: Vec<Option<i32>> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| scope.spawn(move || chunk.iter().map(run_one).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect()
    });
    assert_eq!(codes.len() as u64, IMAGES);
    eprintln!(
        "statuses of {IMAGES} random images: {:?}",
        [0, 1, 4, 5].map(|c| codes.iter().filter(|x| **x == Some(c)).count())
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
        .stderr(predicate::str::contains("did not halt within 0.3 s").and(predicate::str::contains("RIP 0x0")));
    assert!(started.elapsed() < run_bound(0.3));
}
