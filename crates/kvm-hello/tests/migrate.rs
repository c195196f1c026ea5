//! `kvm-hello --lab migrate` (lab 7): its options, a moved run against an unmoved one (the same
//! lines, the same checksum), its stderr and JSON report, a destination killed mid-transfer, and
//! the book's picture of the rounds, which must be what the committed JSON of a real run draws.

mod common;

use std::path::PathBuf;

use common::kvm_hello;
use serde_json::Value;

/// A bad migrate option: status 2, nothing on stdout, one line on stderr that says what is wrong.
#[test]
fn bad_migrate_options_end_with_status_2_and_one_line() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["--rounds", "65"],
            "--rounds takes a whole number from 0 to 64; got '65'",
        ),
        (&["--rounds", "-1"], "--rounds takes a whole number from 0 to 64"),
        (
            &["--dirty-rate", "lots"],
            "--dirty-rate takes a whole number from 0 to 10000; got 'lots'",
        ),
        (&["--steps", "0"], "--steps takes a whole number from 1 to 3600000"),
        (&["--seed", "0x1_0000_0000_0000_0000"], "--seed takes a whole number"),
        (
            &["--kill-destination", "0"],
            "--kill-destination takes a whole number from 1 to 65",
        ),
        (
            &["--no-migration", "--rounds", "3"],
            "--rounds and --kill-destination do not go with --no-migration",
        ),
        (&["--trace"], "--lab migrate does not go with --trace"),
        (&["--guest", "x.bin"], "--lab migrate does not go with --guest"),
    ];
    for (args, says) in cases {
        let out = kvm_hello().args(["--lab", "migrate"]).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("kvm-hello: ") && stderr.contains(says),
            "{args:?}: {stderr:?} does not say {says:?}"
        );
    }
    let out = kvm_hello().args(["--dirty-rate", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kvm-hello: --dirty-rate goes with --lab migrate (see kvm-hello --help)\n"
    );
    // The destination's own flag, given by hand: fd 3 is no stream.
    let out = kvm_hello()
        .args(["--lab", "migrate", "--destination"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fd 3 is not its stream"));
}

/// A migrate run's stdout, stderr and status.
#[cfg(feature = "solution")]
fn migrate(args: &[&str]) -> (String, String, Option<i32>) {
    let out = kvm_hello().args(["--lab", "migrate"]).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// The guest's lines: progress lines numbered in order, one every 100 steps, then the checksum.
#[cfg(feature = "solution")]
fn assert_guest_lines(stdout: &str, steps: u64) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len() as u64, steps / 100 + 1, "{stdout}");
    for (i, line) in lines[..lines.len() - 1].iter().enumerate() {
        assert!(
            line.starts_with(&format!("step {} running 0x", (i + 1) * 100)),
            "line {i}: a line lost or repeated: {line:?}"
        );
    }
    let checksum = lines
        .last()
        .unwrap()
        .strip_prefix("checksum ")
        .expect("the last line is the checksum");
    assert_eq!(checksum.len(), 18, "{checksum}");
    checksum.to_owned()
}

/// Moved and unmoved, the guest prints the same lines and the same checksum, whatever the seed
/// and whether the pre-copy converges (a rate the rounds keep up with, and one they do not).
#[cfg(feature = "solution")]
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_moved_run_prints_what_an_unmoved_one_prints() {
    common::require_kvm();
    for (seed, rate) in [("7", "2"), ("123456789", "60")] {
        let common_args = ["--seed", seed, "--dirty-rate", rate, "--steps", "700"];
        let (unmoved, unmoved_err, status) = migrate(&[&common_args[..], &["--no-migration"]].concat());
        assert_eq!(status, Some(0), "{unmoved_err}");
        let checksum = assert_guest_lines(&unmoved, 700);
        assert!(
            unmoved_err.contains("not moved") && unmoved_err.contains(&checksum),
            "{unmoved_err}"
        );
        let (moved, moved_err, status) = migrate(&common_args);
        assert_eq!(status, Some(0), "{moved_err}");
        assert_eq!(
            moved, unmoved,
            "seed {seed}, rate {rate}: the moved run's output differs"
        );
        let summary = moved_err.lines().last().unwrap();
        assert!(
            summary.starts_with("kvm-hello: migrate: moved after ")
                && summary.ends_with(&format!("finished on the destination, checksum {checksum}")),
            "{moved_err}"
        );
        assert!(moved_err.contains("kvm-hello: round 1: sent 512 pages"), "{moved_err}");
        assert!(moved_err.contains("kvm-hello: stop-and-copy: "), "{moved_err}");
    }
    // Another seed, another run.
    let (other, _, _) = migrate(&["--seed", "8", "--dirty-rate", "2", "--steps", "700", "--no-migration"]);
    let (seven, _, _) = migrate(&["--seed", "7", "--dirty-rate", "2", "--steps", "700", "--no-migration"]);
    assert_ne!(other, seven, "the seed changes what the guest computes");
}

/// The JSON report gives every round; the rounds and the stop-and-copy round add up to the total,
/// the first round sends all of memory, and the stop-and-copy round sends what the last log gave.
#[cfg(feature = "solution")]
#[test]
fn the_json_report_gives_every_round_and_the_downtime() {
    common::require_kvm();
    let (stdout, stderr, status) = migrate(&[
        "--seed",
        "5",
        "--dirty-rate",
        "40",
        "--steps",
        "700",
        "--rounds",
        "3",
        "--json",
    ]);
    assert_eq!(status, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(
        (report["lab"].as_str(), report["ok"].as_bool()),
        (Some("migrate"), Some(true))
    );
    let migration = &report["migration"];
    assert_eq!(migration["moved"], true);
    assert_eq!(
        (migration["seed"].as_u64(), migration["dirty_rate"].as_u64()),
        (Some(5), Some(40))
    );
    let rounds = migration["rounds"].as_array().unwrap();
    assert!((1..=3).contains(&rounds.len()), "{migration}");
    assert_eq!(rounds[0]["pages"], 512);
    for pair in rounds.windows(2) {
        assert_eq!(
            pair[1]["pages"], pair[0]["dirty_after"],
            "a round sends the dirty set before it"
        );
    }
    let last = rounds.last().unwrap();
    assert_eq!(migration["stop_copy_pages"], last["dirty_after"]);
    let sent: u64 = rounds.iter().map(|r| r["pages"].as_u64().unwrap()).sum::<u64>()
        + migration["stop_copy_pages"].as_u64().unwrap();
    assert_eq!(migration["total_pages"].as_u64(), Some(sent));
    assert!(migration["stop_copy_pages"].as_u64().unwrap() < sent);
    assert!(migration["downtime_us"].as_u64().unwrap() > 0);
    assert_eq!(migration["finished_on"], "destination");
    let output = report["output"].as_str().unwrap();
    assert_eq!(assert_guest_lines(output, 700), migration["checksum"].as_str().unwrap());
}

/// A destination killed mid-transfer: one line names it, status 8, and the source runs the guest
/// to its end alone: the same lines and checksum as an unmoved run.
#[cfg(feature = "solution")]
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_destination_killed_mid_transfer_leaves_the_source_to_finish_alone() {
    common::require_kvm();
    let args = ["--seed", "11", "--dirty-rate", "60", "--steps", "700"];
    let (unmoved, _, _) = migrate(&[&args[..], &["--no-migration"]].concat());
    for round in ["1", "2"] {
        let (stdout, stderr, status) = migrate(&[&args[..], &["--kill-destination", round]].concat());
        assert_eq!(status, Some(8), "{stderr}");
        assert_eq!(stdout, unmoved, "the source's run differs from an unmoved one");
        let failure: Vec<&str> = stderr.lines().filter(|l| l.contains("migration failed")).collect();
        assert_eq!(failure.len(), 1, "{stderr}");
        assert!(
            failure[0].contains(&format!(
                "the destination is gone (its end of the stream closed after round {round} was sent)"
            )) && failure[0].contains("the source ran the guest to its end alone"),
            "{stderr}"
        );
    }
}

fn book_img() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../book/src/img")
}

const REGENERATE: &str = "regenerate with: cargo run -p kvm-hello --features solution -- --lab migrate --dirty-rate 5 --json --svg book/src/img > book/src/img/migration-rounds.json";

/// The book's picture is drawn from the JSON committed beside it, the report of a real run, and
/// the chapter quotes its figures.
#[test]
fn the_books_rounds_picture_is_drawn_from_the_committed_json() {
    let json = std::fs::read_to_string(book_img().join("migration-rounds.json")).unwrap();
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["ok"], true,
        "migration-rounds.json is a failed run; {REGENERATE}"
    );
    let svg = kvm_hello::rounds::svg(&report).expect("a migrate report draws");
    let committed = std::fs::read_to_string(book_img().join(kvm_hello::rounds::FILE_NAME)).unwrap();
    assert_eq!(
        svg, committed,
        "book/src/img/migration-rounds.svg is stale; {REGENERATE}"
    );
    let chapter = std::fs::read_to_string(book_img().join("../lab7-migration.md")).unwrap();
    let downtime = format!(
        "{:.2} ms",
        report["migration"]["downtime_us"].as_u64().unwrap() as f64 / 1000.0
    );
    assert!(
        chapter.contains(&downtime),
        "lab7-migration.md does not quote the downtime {downtime}"
    );
}

/// The untouched student kit stops at the first stub the migration meets (lab 1's, the VM).
#[cfg(not(feature = "solution"))]
#[test]
fn the_student_build_stops_at_a_stub_with_status_6() {
    let out = kvm_hello().args(["--lab", "migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("kvm-hello: not implemented yet: lab"), "{stderr}");
}
