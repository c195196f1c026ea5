//! End to end: kvm-hello as a program (assert_cmd + predicates), in every mode.

use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

use super::Group;
use crate::{Check, Ctx, HostNeed, Part};

/// kvm-hello as a program needs every core lab.
const E2E: Group = Group {
    part: Part::EndToEnd,
    needs: &[1, 2, 3, 4],
    runs_guest: true,
};

const GREETING: &str = "Hello, world!\n";
const SUMMARY: &str = "kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42\n";

/// The end-to-end checks.
pub const CHECKS: &[Check] = &[
    E2E.check("e2e_long_mode", "kvm-hello --mode long", 2, long_mode),
    E2E.check("e2e_protected_mode", "kvm-hello --mode protected", 2, protected_mode),
    E2E.check("e2e_real_mode", "kvm-hello --mode real", 2, real_mode),
    Check {
        host: HostNeed::Paged32,
        ..E2E.check("e2e_paged32_mode", "kvm-hello --mode paged32", 1, paged32_mode)
    },
    E2E.check(
        "e2e_json_report",
        "kvm-hello --json agrees with the run",
        2,
        json_report,
    ),
];

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `kvm-hello --lab lwn`, run as a program (graded with lab 0).
pub const LWN: Check = Check {
    name: "e2e_lab_lwn",
    part: Part::Lab(0),
    title: "kvm-hello --lab lwn and its JSON report",
    points: 1,
    needs: &[0],
    runs_guest: true,
    host: HostNeed::Kvm,
    run: lab_lwn,
};

/// `kvm-hello --lab hypercalls`, run as a program (graded with lab 5).
pub const HYPERCALLS: Check = Check {
    name: "e2e_lab_hypercalls",
    part: Part::Lab(5),
    title: "kvm-hello --lab hypercalls and its JSON report",
    points: 2,
    needs: &[1, 2, 3, 5],
    runs_guest: true,
    host: HostNeed::Kvm,
    run: lab_hypercalls,
};

fn lab_lwn(ctx: &Ctx) -> Result<(), String> {
    let args = ["--lab", "lwn"];
    let run = kvm_hello(ctx, &args)?;
    if run.code != Some(0)
        || run.stdout != "4\n"
        || run.stderr != "kvm-hello: guest halted after 3 exits (io 2, hlt 1)\n"
    {
        return Err(e2e_fail(
            &args,
            format!(
                "status {:?}, stdout {:?}; expected 0 and \"4\\n\" in 3 exits (io 2, hlt 1)",
                run.code, run.stdout
            ),
            &run,
        ));
    }
    let args = ["--lab", "lwn", "--json"];
    let run = kvm_hello(ctx, &args)?;
    let report: Value =
        serde_json::from_str(&run.stdout).map_err(|err| e2e_fail(&args, format!("not JSON: {err}"), &run))?;
    let expected = [
        ("/lab", Value::from("lwn")),
        ("/output", Value::from("4\n")),
        ("/exits/total", Value::from(3)),
        ("/ok", Value::from(true)),
    ];
    expect_json(&args, &run, &report, &expected)
}

fn lab_hypercalls(ctx: &Ctx) -> Result<(), String> {
    let args = ["--lab", "hypercalls", "--json"];
    let run = kvm_hello(ctx, &args)?;
    let report: Value =
        serde_json::from_str(&run.stdout).map_err(|err| e2e_fail(&args, format!("not JSON: {err}"), &run))?;
    let expected = [
        ("/lab", Value::from("hypercalls")),
        ("/output", Value::from(super::lab5::EXPECTED_OUTPUT)),
        ("/exits/total", Value::from(44)),
        ("/rax", Value::from(42)),
        ("/memory_0x400", Value::from(42)),
        ("/ok", Value::from(true)),
    ];
    expect_json(&args, &run, &report, &expected)?;
    let base = report["memory_host_base"].as_u64().unwrap_or_default();
    let first = report["hypercalls"]
        .as_array()
        .and_then(|calls| calls.iter().find(|c| c["name"] == "gva_to_hva"))
        .cloned();
    let (gva, hva) = first
        .map(|c| (c["gva"].as_u64(), c["hva"].as_u64()))
        .unwrap_or_default();
    if (gva, hva) != (Some(0x400), Some(base + 0x400)) {
        return Err(e2e_fail(
            &args,
            format!(
                "the first gva_to_hva record has gva {gva:?}, hva {hva:?}; expected 0x400 and memory_host_base + 0x400"
            ),
            &run,
        ));
    }
    Ok(())
}

fn expect_json(args: &[&str], run: &Run, report: &Value, expected: &[(&str, Value)]) -> Result<(), String> {
    for (pointer, value) in expected {
        let found = report.pointer(pointer).cloned().unwrap_or(Value::Null);
        if found != *value {
            return Err(e2e_fail(
                args,
                format!("JSON {pointer} is {found}, expected {value}"),
                run,
            ));
        }
    }
    Ok(())
}

fn kvm_hello(ctx: &Ctx, args: &[&str]) -> Result<Run, String> {
    let (program, leading) = &ctx.vmm;
    let out = Command::new(program)
        .args(leading)
        .args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .map_err(|err| format!("cannot run kvm-hello: {err}"))?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn e2e_fail(args: &[&str], what: impl std::fmt::Display, run: &Run) -> String {
    format!(
        "kvm-hello {}: {what} (its stderr: {:?}) (book: kvm-hello reference)",
        args.join(" "),
        run.stderr.trim_end()
    )
}

fn expect_hello(ctx: &Ctx, mode: &str) -> Result<(), String> {
    let args = ["--mode", mode];
    let run = kvm_hello(ctx, &args)?;
    if run.code != Some(0) {
        return Err(e2e_fail(&args, format!("exit status {:?}, expected 0", run.code), &run));
    }
    if !predicate::eq(GREETING).eval(run.stdout.as_str()) {
        return Err(e2e_fail(
            &args,
            format!("stdout is {:?}, expected exactly {GREETING:?}", run.stdout),
            &run,
        ));
    }
    if !predicate::eq(SUMMARY).eval(run.stderr.as_str()) {
        return Err(e2e_fail(&args, format!("the summary is not {SUMMARY:?}"), &run));
    }
    Ok(())
}

fn long_mode(ctx: &Ctx) -> Result<(), String> {
    expect_hello(ctx, "long")
}

fn protected_mode(ctx: &Ctx) -> Result<(), String> {
    expect_hello(ctx, "protected")
}

fn real_mode(ctx: &Ctx) -> Result<(), String> {
    expect_hello(ctx, "real")
}

fn paged32_mode(ctx: &Ctx) -> Result<(), String> {
    // On PVM hosts the runner reports this check as not run: 32-bit paging is refused there.
    expect_hello(ctx, "paged32")
}

fn json_report(ctx: &Ctx) -> Result<(), String> {
    let args = ["--json"];
    let run = kvm_hello(ctx, &args)?;
    let report: Value = serde_json::from_str(&run.stdout)
        .map_err(|err| e2e_fail(&args, format!("stdout is not one JSON object: {err}"), &run))?;
    let expected = [
        ("/mode", Value::from("long")),
        ("/output", Value::from(GREETING)),
        ("/exits/total", Value::from(15)),
        ("/exits/io", Value::from(14)),
        ("/exits/hlt", Value::from(1)),
        ("/rax", Value::from(42)),
        ("/memory_0x400", Value::from(42)),
        ("/ok", Value::from(true)),
        ("/status", Value::from(0)),
    ];
    for (pointer, value) in expected {
        let found = report.pointer(pointer).cloned().unwrap_or(Value::Null);
        if found != value {
            return Err(e2e_fail(
                &args,
                format!("JSON {pointer} is {found}, expected {value}"),
                &run,
            ));
        }
    }
    if run.code != Some(0) {
        return Err(e2e_fail(&args, format!("exit status {:?}, expected 0", run.code), &run));
    }
    Ok(())
}
