//! End to end: kvm-hello as a program (assert_cmd + predicates), in every mode.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

use crate::{Check, Ctx, Part};

const GREETING: &str = "Hello, world!\n";
const SUMMARY: &str = "kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42\n";

const fn check(name: &'static str, title: &'static str, points: u32, run: fn(&Ctx) -> Result<(), String>) -> Check {
    Check {
        name,
        part: Part::EndToEnd,
        title,
        points,
        needs: &[1, 2, 3, 4],
        runs_guest: true,
        run,
    }
}

/// The end-to-end checks.
pub const CHECKS: &[Check] = &[
    check("e2e_long_mode", "kvm-hello --mode long", 2, long_mode),
    check("e2e_protected_mode", "kvm-hello --mode protected", 2, protected_mode),
    check("e2e_real_mode", "kvm-hello --mode real", 2, real_mode),
    check(
        "e2e_paged32_mode",
        "kvm-hello --mode paged32 (explained on PVM hosts)",
        1,
        paged32_mode,
    ),
    check(
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
    if !Path::new("/sys/module/kvm_pvm").exists() {
        return expect_hello(ctx, "paged32");
    }
    let args = ["--mode", "paged32"];
    let run = kvm_hello(ctx, &args)?;
    let explained = predicate::str::contains("PVM").and(predicate::str::contains("paging only in long mode"));
    if run.code == Some(4) && explained.eval(run.stderr.as_str()) {
        Ok(())
    } else {
        Err(e2e_fail(
            &args,
            "on this PVM host paged32 must end with status 4 and the line that explains why",
            &run,
        ))
    }
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
