//! `kvm-hello --lab schedule` (lab 6): its options, its console and JSON report, and the book's
//! pictures of its slices, which must be what the committed JSON of a real run draws.

mod common;

use std::path::PathBuf;

use common::kvm_hello;
use serde_json::Value;

/// A bad schedule option: status 2, nothing on stdout, one line on stderr that says what is wrong.
#[test]
fn bad_schedule_options_end_with_status_2_and_one_line() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["--policy", "fifo"],
            "unknown policy 'fifo': expected cooperative, round-robin or weighted",
        ),
        (&["--policy", "weighted", "--share", "60:30"], "they add up to 90"),
        (
            &["--policy", "weighted", "--share", "0:100"],
            "a VM with share 0 would never run",
        ),
        (&["--policy", "weighted", "--share", "70"], "--share takes A:B"),
        (&["--quantum-ms", "0"], "--quantum-ms takes whole milliseconds from 1"),
        (
            &["--duration-ms", "-5"],
            "--duration-ms takes whole milliseconds from 1",
        ),
        (&["--share", "70:30"], "--share goes with --policy weighted"),
        (
            &["--policy", "cooperative", "--quantum-ms", "5"],
            "--quantum-ms does not go with --policy cooperative",
        ),
        (&["--trace"], "--lab schedule does not go with --trace"),
    ];
    for (args, says) in cases {
        let out = kvm_hello().args(["--lab", "schedule"]).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("kvm-hello: ") && stderr.contains(says),
            "{args:?}: {stderr:?} does not say {says:?}"
        );
    }
    let out = kvm_hello().args(["--policy", "round-robin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kvm-hello: --policy goes with --lab schedule (see kvm-hello --help)\n"
    );
}

#[cfg(feature = "solution")]
#[test]
fn both_vms_print_their_own_lines_and_the_summary_gives_their_shares() {
    common::require_kvm();
    let out = kvm_hello()
        .args(["--lab", "schedule", "--policy", "round-robin", "--duration-ms", "300"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut next = [1u64, 1];
    for line in stdout.lines() {
        let vm = match line.split_once(' ') {
            Some(("[A]", rest)) if rest.starts_with("A ") => 0,
            Some(("[B]", rest)) if rest.starts_with("B ") => 1,
            _ => panic!("a line of neither VM: {line:?}"),
        };
        let round: u64 = line[6..].parse().unwrap_or_else(|_| panic!("no round in {line:?}"));
        assert_eq!(round, next[vm], "{line:?}: a round lost or repeated");
        next[vm] += 1;
    }
    assert!(next[0] > 1 && next[1] > 1, "both VMs print: {stdout}");
    assert!(
        stderr.starts_with("kvm-hello: schedule (round-robin, quantum 10 ms): guest time A ")
            && stderr.contains("), B ")
            && stderr.lines().count() == 1,
        "{stderr:?}"
    );
}

#[cfg(feature = "solution")]
#[test]
fn the_json_report_gives_each_vm_and_every_slice() {
    common::require_kvm();
    let out = kvm_hello()
        .args([
            "--lab",
            "schedule",
            "--policy",
            "weighted",
            "--share",
            "60:40",
            "--quantum-ms",
            "5",
        ])
        .args(["--duration-ms", "200", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        (report["lab"].as_str(), report["ok"].as_bool()),
        (Some("schedule"), Some(true))
    );
    let schedule = &report["schedule"];
    assert_eq!(schedule["policy"], "weighted");
    assert_eq!(schedule["quantum_us"], 5000);
    assert_eq!(schedule["shares"], serde_json::json!([60, 40]));
    let vms = schedule["vms"].as_array().unwrap();
    let slices = schedule["slices"].as_array().unwrap();
    let mut guest_total = 0;
    for (i, vm) in vms.iter().enumerate() {
        let mine: Vec<&Value> = slices.iter().filter(|s| s["vm"] == i).collect();
        let guest: u64 = mine.iter().map(|s| s["guest_us"].as_u64().unwrap()).sum();
        assert_eq!(vm["slices"].as_u64(), Some(mine.len() as u64), "{vm}");
        assert!(vm["progress"].as_u64().unwrap() > 0, "{vm}");
        // The slices' guest times add up to the VM's (each rounded down to a microsecond).
        let total = vm["guest_time_us"].as_u64().unwrap();
        assert!(
            total.abs_diff(guest) <= mine.len() as u64 + 1,
            "{vm}: slices add up to {guest} us"
        );
        guest_total += total;
    }
    assert!(
        guest_total >= 200_000,
        "the loop ends at the duration, not before: {guest_total} us"
    );
    let shares: f64 = vms.iter().map(|vm| vm["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "the shares add up to 1: {shares}");
}

fn book_img() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../book/src/img")
}

const REGENERATE: &str = "regenerate with: cargo run -p kvm-hello --features solution -- --lab schedule --policy POLICY --json --svg book/src/img > book/src/img/schedule-POLICY.json";

/// The book's pictures are drawn from the JSON committed beside them, the report of a real run.
#[test]
fn the_books_slice_pictures_are_drawn_from_the_committed_json() {
    for policy in ["round-robin", "weighted"] {
        let json = std::fs::read_to_string(book_img().join(format!("schedule-{policy}.json"))).unwrap();
        let report: Value = serde_json::from_str(&json).unwrap_or_else(|err| panic!("schedule-{policy}.json: {err}"));
        assert_eq!(report["schedule"]["policy"], policy, "{REGENERATE}");
        assert_eq!(
            report["ok"], true,
            "schedule-{policy}.json is a failed run; {REGENERATE}"
        );
        let svg = kvm_hello::slices::svg(&report).expect("a schedule report draws");
        let committed = std::fs::read_to_string(book_img().join(kvm_hello::slices::file_name(policy))).unwrap();
        assert_eq!(
            svg, committed,
            "book/src/img/schedule-{policy}.svg is stale; {REGENERATE}"
        );
    }
}

/// The chapter's figures are the committed run's: its measured shares appear in the text.
#[test]
fn the_chapter_quotes_the_measured_shares_of_the_committed_runs() {
    let chapter = std::fs::read_to_string(book_img().join("../lab6-scheduling.md")).unwrap();
    for policy in ["round-robin", "weighted"] {
        let json = std::fs::read_to_string(book_img().join(format!("schedule-{policy}.json"))).unwrap();
        let report: Value = serde_json::from_str(&json).unwrap();
        let share = 100.0 * report["schedule"]["vms"][0]["share"].as_f64().unwrap();
        let shown = format!("{share:.1}%");
        assert!(
            chapter.contains(&shown),
            "lab6-scheduling.md does not quote A's {policy} share {shown}"
        );
    }
}

/// The untouched student kit stops at lab 6's first stub with status 6, naming it.
#[cfg(not(feature = "solution"))]
#[test]
fn the_student_build_stops_at_lab_6s_first_stub() {
    kvm_hello()
        .args(["--lab", "schedule"])
        .assert()
        .code(6)
        .stdout("")
        .stderr(
            "kvm-hello: not implemented yet: lab6 create_guest_vm (labs/lab6-scheduling/src/lib.rs; book: Lab 6, \
         Scheduling two VMs)\n",
        );
}
