//! `kvm-hello --step` end to end with the reference solution: the listings of the kit's guests in
//! three modes against the expected ones in `tests/step/`, the JSON records against the image
//! itself, and the ends of a stepped run (step limit, timeout, fault).
#![cfg(feature = "solution")]

mod common;

use std::path::Path;

use common::{image_file, is_pvm_host, kvm_hello, require_kvm};
use predicates::prelude::*;
use serde_json::Value;

const SUMMARY: &str = "kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42\n";

fn expected_listing(mode: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/step/{mode}.txt"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

#[test]
fn the_kit_guests_listings_are_the_expected_ones_in_three_modes() {
    require_kvm();
    for mode in ["long", "protected", "real"] {
        let out = kvm_hello().args(["--step", "--mode", mode]).output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            listing,
            expected_listing(mode),
            "--step --mode {mode}: the listing differs from tests/step/{mode}.txt"
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), SUMMARY, "--mode {mode}");
        assert_eq!(out.status.code(), Some(0), "--mode {mode}");
    }
}

#[test]
fn paged32_steps_where_the_host_allows() {
    require_kvm();
    let assert = kvm_hello().args(["--step", "--mode", "paged32"]).assert();
    if is_pvm_host() {
        assert
            .code(4)
            .stdout(predicate::str::contains("-> shutdown"))
            .stderr(predicate::str::contains("PVM"));
    } else {
        assert
            .success()
            .stdout(predicate::str::contains("-> hlt"))
            .stderr(SUMMARY);
    }
}

/// The records of `--step --json`, and the run's report after them.
fn json_records(mode: &str) -> (Vec<Value>, Value) {
    let out = kvm_hello().args(["--step", "--json", "--mode", mode]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut values: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    let report = values.pop().expect("the report comes last");
    (values, report)
}

#[test]
fn json_records_hold_the_images_bytes_the_output_and_end_at_hlt() {
    require_kvm();
    for (mode, image) in [
        ("long", guests::HELLO64),
        ("protected", guests::HELLO32),
        ("real", guests::HELLO16),
    ] {
        let (steps, report) = json_records(mode);
        assert_eq!(report["ok"], true, "{mode}: {report}");
        assert_eq!(report["output"], "Hello, world!\n");
        let mut output = String::new();
        for (i, step) in steps.iter().enumerate() {
            assert_eq!(step["step"], i as u64 + 1, "{mode}: numbered from 1");
            // The kit's guests run at guest physical 0 with identity mapping and flat segments.
            let rip = step["rip"].as_u64().unwrap() as usize;
            let bytes = step["bytes"].as_str().unwrap();
            let in_image: String = image[rip..rip + bytes.len() / 2]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(bytes, in_image, "{mode}: step {} shows the image's bytes at RIP", i + 1);
            for exit in step["exits"].as_array().unwrap() {
                if exit["kind"] == "io out" {
                    assert_eq!(exit["port"], 0xe9);
                    output.push_str(exit["data"].as_str().unwrap());
                }
            }
        }
        assert_eq!(output, "Hello, world!\n", "{mode}: the OUTs' bytes, in order");
        let last = steps.last().unwrap();
        assert_eq!(
            (last["text"].as_str(), &last["exits"][0]["kind"]),
            (Some("hlt"), &Value::from("hlt"))
        );
        let store = steps
            .iter()
            .find(|s| s["text"].as_str().unwrap().contains("[0x400], 0x2a"));
        assert!(store.is_some(), "{mode}: the store of 42 at 0x400 is listed");
        assert_eq!(
            steps[0]["cs"],
            if mode == "real" { Value::from(0) } else { Value::Null }
        );
    }
}

#[test]
fn the_step_limit_stops_with_a_clear_line_and_status_5() {
    require_kvm();
    kvm_hello()
        .args(["--step", "--max-steps", "5"])
        .assert()
        .code(5)
        .stdout(predicate::function(|s: &str| {
            s.lines().filter(|l| !l.trim_start().starts_with("->")).count() == 5
        }))
        .stderr(predicate::str::starts_with(
            "kvm-hello: step limit: the guest ran 5 instructions (--max-steps) without halting; stopped at RIP 0x15",
        ));
}

#[test]
fn a_spinning_guest_is_stopped_by_the_watchdog_and_a_fault_is_listed_where_it_happens() {
    require_kvm();
    let spin = image_file("step-spin.bin", &[0xeb, 0xfe]); // jmp .
    kvm_hello()
        .args(["--step", "--max-steps", "100000000", "--timeout", "0.3", "--guest"])
        .arg(&spin)
        .assert()
        .code(5)
        .stdout(predicate::str::contains("jmp 0x0"))
        .stderr(predicate::str::contains(
            "timeout: the guest did not halt within 0.3 s of vCPU time",
        ));
    let ud2 = image_file("step-ud2.bin", &[0x90, 0x0f, 0x0b]); // nop; ud2
    kvm_hello()
        .args(["--step", "--guest"])
        .arg(&ud2)
        .assert()
        .code(4)
        .stdout(predicate::str::contains("    2  0x1").and(predicate::str::contains("ud2")))
        .stdout(predicate::str::ends_with("-> shutdown\n"))
        .stderr(predicate::str::contains("triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x1"));
}
