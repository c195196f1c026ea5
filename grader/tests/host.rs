//! The grader on a host without KVM (a mount namespace hides /dev/kvm behind /dev/null) and
//! under Ctrl-C. Each test spawns the grader itself, so they live apart from the runner's tests.
#![cfg(feature = "solution")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const GRADER: &str = env!("CARGO_BIN_EXE_grader");

#[test]
fn without_kvm_the_reference_passes_every_pure_check_and_nothing_fails() {
    // As root, `unshare -m` gives the grader a mount namespace where /dev/kvm is /dev/null. One
    // run: the scoreboard on stdout, every outcome as JSON in the report.
    let report = std::env::temp_dir().join(format!("grader-host-test-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let script = format!(
        "mount --bind /dev/null /dev/kvm && exec {GRADER} --seed 99 --report {}",
        report.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "this test hides /dev/kvm with `unshare -m` and a bind mount, which needs root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read(&report).expect("--report writes the report");
    let _ = std::fs::remove_file(&report);
    let results: Value = serde_json::from_slice(&json).expect("--report writes JSON");
    let results = results.as_array().expect("a list of checks");
    let (mut passed, mut not_run) = (0, 0);
    for r in results {
        let check = grader::find_check(r["check"].as_str().unwrap()).unwrap();
        let message = r["message"].as_str().unwrap();
        if check.host == grader::HostNeed::Nothing {
            assert_eq!(r["outcome"], "passed", "{r}");
            passed += 1;
        } else {
            assert_eq!(r["outcome"], "not_run", "{r}");
            assert!(
                message.starts_with("not run: this host has no usable KVM ("),
                "{message}"
            );
            assert!(message.contains("KVM_GET_API_VERSION"), "{message}");
            assert!(!message.contains("lab0") && !message.contains("blocked"), "{message}");
            not_run += 1;
        }
    }
    assert!(passed >= 25 && not_run >= 20, "{passed} passed, {not_run} not run");
    // The scoreboard: a banner, and a score over the checks that ran only.
    let board = String::from_utf8_lossy(&out.stdout);
    assert!(board.starts_with("NOTE: "), "{board}");
    assert!(
        board.contains("not run on this host, counted neither in the score nor in the maximum"),
        "{board}"
    );
    let score = board.lines().find(|l| l.starts_with("Score: ")).unwrap();
    let (got, max) = score["Score: ".len()..].split_once('/').unwrap();
    assert_eq!(got, max, "{board}");
    // --strict makes "not run" a failure.
    let script = format!("mount --bind /dev/null /dev/kvm && exec {GRADER} lab1 --strict --json");
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "--strict needs the jail of official grading (status 4: this host cannot jail lab code; \
         install bubblewrap): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &results.as_array().unwrap()[0];
    assert_eq!(first["outcome"], "failed", "{first}");
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .starts_with("not run on this host (--strict): ")
    );
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat.rsplit(") ").next().unwrap_or_default();
            rest.split(' ').nth(1) == Some(&pid.to_string())
        })
        .collect()
}

fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z")
}

#[test]
fn ctrl_c_stops_the_running_check_and_the_grader() {
    let mut grader = Command::new(GRADER)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a check's probe runs (bwrap's command line, or its own, names grader-probe; the
    // jail's trial run does not), then press Ctrl-C (SIGINT to the grader).
    let started = Instant::now();
    let is_probe = |pid: &u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(12).any(|w| w == b"grader-probe"))
    };
    let check = loop {
        if let Some(child) = children_of(grader.id()).into_iter().find(is_probe) {
            break child;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no check started");
        std::thread::sleep(Duration::from_millis(2));
    };
    // SAFETY: kill(2) sends SIGINT to the grader we started.
    unsafe { libc::kill(grader.id() as i32, libc::SIGINT) };
    let status = grader.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(grader.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("grader: interrupted (SIGINT)"), "{stderr}");
    assert!(!running(check), "the check's process {check} outlived the grader");
}
