//! kvm-hello end to end with the reference solution: every mode, the JSON report, foreign images.
#![cfg(feature = "solution")]

mod common;

use common::{image_file, is_pvm_host, kvm_hello, require_kvm};
use predicates::prelude::*;
use serde_json::Value;

const GREETING: &str = "Hello, world!\n";
const SUMMARY: &str = "kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42\n";

#[test]
fn long_protected_and_real_mode_say_hello_in_15_exits() {
    require_kvm();
    for mode in ["long", "protected", "real"] {
        kvm_hello()
            .args(["--mode", mode])
            .assert()
            .success()
            .stdout(GREETING)
            .stderr(SUMMARY);
    }
}

#[test]
fn long_mode_is_the_default() {
    require_kvm();
    kvm_hello().assert().success().stdout(GREETING).stderr(SUMMARY);
}

#[test]
fn json_report_carries_the_same_numbers() {
    require_kvm();
    for (mode, width_max) in [
        ("long", u64::MAX),
        ("protected", u32::MAX as u64),
        ("real", u16::MAX as u64),
    ] {
        let out = kvm_hello()
            .args(["--mode", mode, "--json"])
            .assert()
            .success()
            .get_output()
            .clone();
        let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
        assert_eq!(report["mode"], mode);
        assert_eq!(report["output"], GREETING);
        assert_eq!(report["exits"]["total"], 15);
        assert_eq!(report["exits"]["io"], 14);
        assert_eq!(report["exits"]["hlt"], 1);
        assert_eq!(report["rax"], 42);
        assert_eq!(report["memory_0x400"], 42);
        assert!(report["memory_0x400"].as_u64().unwrap() <= width_max);
        assert_eq!(report["ok"], true);
        assert_eq!(report["status"], 0);
        assert!(report.get("error").is_none(), "no error on success: {report}");
        assert!(report["memory_host_base"].as_u64().unwrap() > 0);
        assert!(report["kvm_run"]["size"].as_u64().unwrap() >= 4096);
        assert_eq!(String::from_utf8_lossy(&out.stderr), SUMMARY);
    }
}

#[test]
fn paged32_runs_on_vmx_or_svm_and_is_explained_on_pvm() {
    require_kvm();
    let run = kvm_hello().args(["--mode", "paged32"]).assert();
    if is_pvm_host() {
        run.code(4)
            .stdout("")
            .stderr(predicate::str::contains("PVM").and(predicate::str::contains("paging only in long mode")));
    } else {
        run.success().stdout(GREETING).stderr(SUMMARY);
    }
}

#[test]
fn a_gcc_built_guest_runs_like_the_kit_guest() {
    require_kvm();
    let image = image_file("hello64_c.bin", guests::HELLO64_C);
    kvm_hello()
        .arg("--guest")
        .arg(&image)
        .assert()
        .success()
        .stdout(GREETING)
        .stderr(SUMMARY);
}

#[test]
fn a_real_mode_image_from_a_file_runs() {
    require_kvm();
    let image = image_file("hello16.bin", guests::HELLO16);
    kvm_hello()
        .args(["--mode", "real", "--guest"])
        .arg(&image)
        .assert()
        .success()
        .stdout(GREETING)
        .stderr(SUMMARY);
}

#[test]
fn trace_prints_every_exit_on_stderr() {
    require_kvm();
    let out = kvm_hello()
        .arg("--trace")
        .assert()
        .success()
        .stdout(GREETING)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("trace: io out, port 0xe9"))
            .count(),
        14,
        "{stderr}"
    );
    assert_eq!(stderr.lines().filter(|l| *l == "trace: hlt").count(), 1, "{stderr}");
    assert!(stderr.ends_with(SUMMARY));
}

#[test]
fn lab_lwn_prints_4_in_3_exits() {
    require_kvm();
    kvm_hello()
        .args(["--lab", "lwn"])
        .assert()
        .success()
        .stdout("4\n")
        .stderr("kvm-hello: guest halted after 3 exits (io 2, hlt 1)\n");
}

#[test]
fn lab_hypercalls_runs_the_hypercall_guest_and_reports_every_call() {
    require_kvm();
    let out = kvm_hello()
        .args(["--lab", "hypercalls", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lab"], "hypercalls");
    assert!(
        report["output"]
            .as_str()
            .unwrap()
            .ends_with("35\n37\nIO in: 3\nIO out: 37\nInvalid GVA\n"),
        "{report}"
    );
    assert_eq!(report["exits"]["total"], 44);
    let calls = report["hypercalls"].as_array().unwrap();
    assert_eq!(calls.iter().filter(|c| c["name"] == "print8bit").count(), 32);
    let base = report["memory_host_base"].as_u64().unwrap();
    let translated: Vec<(u64, u64)> = calls
        .iter()
        .filter(|c| c["name"] == "gva_to_hva")
        .map(|c| (c["gva"].as_u64().unwrap(), c["hva"].as_u64().unwrap()))
        .collect();
    assert_eq!(translated, [(0x400, base + 0x400), (0x4000_0000, 0)]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kvm-hello: guest halted after 44 exits (io 43, hlt 1); rax = 42, memory[0x400] = 42\n"
    );
}
