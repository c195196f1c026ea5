//! End to end: kvm-hello as a program (`grader-probe vmm`, built from the student's labs) on
//! guests made for each run, in every mode.
//!
//! The judge makes each guest (`guestgen`): the text it prints and the values it leaves in RAX
//! and at 0x400 are drawn for this run. It judges what the guest did as the program shows it:
//! its output on stdout, the values it left (in the summary line or the JSON report), and the
//! exit status those values call for; the counts of exits count only as the number the guest
//! must cause (one OUT per byte it printed, and its HLT).

use grader_protocol::e2e::{RunVmm, VmmOutput, VmmRun};
use kit_common::{Mode, Status};
use serde_json::Value;

use super::Group;
use crate::guestgen::{self, Guest};
use crate::rng::Rng;
use crate::{Check, Ctx, HostNeed, Part, Stop};

/// kvm-hello as a program needs every core lab.
const E2E: Group = Group {
    part: Part::EndToEnd,
    needs: &[1, 2, 3, 4],
    runs_guest: true,
};
/// The value kvm-hello-world's checks want in RAX and at 0x400 (the assignment's 42).
const EXPECTED: u64 = 42;
/// How long one run of the VMM may take (its own watchdog stops a guest after 5 s of vCPU time).
const VMM_WAIT_MS: u64 = 20_000;

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

/// One run of the VMM: its command line as the student would type it, and what it did.
struct Run {
    args: Vec<String>,
    output: VmmOutput,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs the VMM once per (guest, args), in this order.
fn run_vmm(ctx: &mut Ctx, runs: &[(&Guest, Vec<String>)]) -> Result<Vec<Run>, Stop> {
    let outputs = ctx.call(&RunVmm {
        runs: runs
            .iter()
            .map(|(guest, args)| VmmRun {
                image: guest.image.clone(),
                args: args.clone(),
            })
            .collect(),
        wait_ms: VMM_WAIT_MS,
    })?;
    if outputs.len() != runs.len() {
        return Err(Stop::Failed(
            "the probe did not report every run of kvm-hello (a fault of the kit, not of your labs: report it)".into(),
        ));
    }
    Ok(runs
        .iter()
        .zip(outputs)
        .map(|((_, args), output)| Run {
            args: args.clone(),
            output,
        })
        .collect())
}

fn e2e_fail(run: &Run, what: impl std::fmt::Display) -> Stop {
    Stop::Failed(format!(
        "kvm-hello --guest GUEST {}: {what} (its stderr: {:?}) (book: kvm-hello reference)",
        run.args.join(" "),
        run.stderr().trim_end()
    ))
}

/// A run that ended at a stub or in a panic, or was killed: what stops the check.
fn broken(run: &Run) -> Option<Stop> {
    let line = run.stderr();
    let line = line.trim_end().strip_prefix("kvm-hello: ").unwrap_or(line.trim_end());
    if run.output.killed {
        return Some(e2e_fail(
            run,
            format!("still running after {} s: it was killed", VMM_WAIT_MS / 1000),
        ));
    }
    match run.output.status {
        Some(code) if code == Status::NotImplemented.code() => Some(super::stub_reached(line)),
        Some(code) if code == Status::LabPanicked.code() => Some(e2e_fail(run, format!("exit status {code}: {line}"))),
        None => Some(e2e_fail(run, "ended by a signal")),
        _ => None,
    }
}

/// The guest of one run: its text and its values, drawn for this run; 42s or not.
fn made_guest(rng: &mut Rng, mode: Mode, right: bool) -> Guest {
    let text = rng.text_between(3, 40);
    let mask = guestgen::word_mask(mode);
    let wrong = |rng: &mut Rng| loop {
        let value = rng.next_u64() & mask & 0x7fff_ffff;
        if value != EXPECTED {
            break value;
        }
    };
    let (rax, result) = match (right, rng.chance(50)) {
        (true, _) => (EXPECTED, EXPECTED),
        (false, true) => (wrong(rng), wrong(rng)),
        (false, false) => (EXPECTED, wrong(rng)),
    };
    guestgen::returning(mode, &text, rax, result, rng.next_u64())
}

/// What kvm-hello says on stderr after `guest` ran: the summary, or the wrong result it found.
fn expected_summary(guest: &Guest) -> String {
    let out = guest.exits - 1;
    if guest.rax != EXPECTED {
        format!(
            "kvm-hello: wrong result: RAX is {0} ({0:#x}), expected 42 (book: Lab 4, The exit loop)\n",
            guest.rax
        )
    } else if guest.result != EXPECTED {
        format!(
            "kvm-hello: wrong result: memory at 0x400 is {0} ({0:#x}), expected 42 (book: Lab 4, The exit loop)\n",
            guest.result
        )
    } else {
        format!(
            "kvm-hello: guest halted after {} exits (io {out}, hlt 1); rax = 42, memory[0x400] = 42\n",
            guest.exits
        )
    }
}

fn status_of(guest: &Guest) -> i32 {
    if guest.rax == EXPECTED && guest.result == EXPECTED {
        Status::Ok.code()
    } else {
        Status::WrongResult.code()
    }
}

/// The guest's output on stdout, its values in the summary, the status they call for.
fn judge_plain(run: &Run, guest: &Guest) -> Result<(), Stop> {
    if let Some(stop) = broken(run) {
        return Err(stop);
    }
    if run.output.stdout != guest.output {
        return Err(e2e_fail(
            run,
            format!(
                "stdout: {}",
                super::output_difference(&run.output.stdout, &guest.output)
            ),
        ));
    }
    let summary = expected_summary(guest);
    if run.stderr() != summary {
        return Err(e2e_fail(
            run,
            format!(
                "the summary is not {summary:?}: the guest printed {} bytes with one OUT each, halted, and left RAX = {} and {} at 0x400",
                guest.output.len(),
                guest.rax,
                guest.result
            ),
        ));
    }
    let expected = status_of(guest);
    if run.output.status != Some(expected) {
        return Err(e2e_fail(
            run,
            format!("exit status {:?}, expected {expected}", run.output.status),
        ));
    }
    Ok(())
}

/// A guest with the 42s and a guest without, each with its own text, in a random order.
fn expect_hello(ctx: &mut Ctx, mode: Mode) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut guests = [made_guest(&mut rng, mode, true), made_guest(&mut rng, mode, false)];
    rng.shuffle(&mut guests);
    let args = vec!["--mode".to_owned(), mode.name().to_owned()];
    let runs = run_vmm(
        ctx,
        &guests.iter().map(|guest| (guest, args.clone())).collect::<Vec<_>>(),
    )?;
    for (run, guest) in runs.iter().zip(&guests) {
        judge_plain(run, guest)?;
    }
    Ok(())
}

fn long_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    expect_hello(ctx, Mode::Long)
}

fn protected_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    expect_hello(ctx, Mode::Protected)
}

fn real_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    expect_hello(ctx, Mode::Real)
}

fn paged32_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    // On PVM hosts the runner reports this check as not run: 32-bit paging is refused there.
    expect_hello(ctx, Mode::Paged32)
}

fn json_report(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mode = *rng.pick(&[Mode::Real, Mode::Protected, Mode::Long]);
    let right = rng.chance(50);
    let guest = made_guest(&mut rng, mode, right);
    let args = vec!["--mode".to_owned(), mode.name().to_owned(), "--json".to_owned()];
    let runs = run_vmm(ctx, &[(&guest, args)])?;
    let run = &runs[0];
    if let Some(stop) = broken(run) {
        return Err(stop);
    }
    let report: Value = serde_json::from_str(&run.stdout())
        .map_err(|err| e2e_fail(run, format!("stdout is not one JSON object: {err}")))?;
    let ok = status_of(&guest) == Status::Ok.code();
    let out = guest.exits - 1;
    let mask = guestgen::word_mask(mode);
    let rax = report.pointer("/rax").and_then(Value::as_u64).map(|rax| rax & mask);
    let expected = [
        ("/mode", Value::from(mode.name())),
        (
            "/output",
            Value::from(String::from_utf8_lossy(&guest.output).into_owned()),
        ),
        ("/exits/total", Value::from(guest.exits)),
        ("/exits/io", Value::from(out)),
        ("/exits/hlt", Value::from(1)),
        ("/memory_0x400", Value::from(guest.result)),
        ("/ok", Value::from(ok)),
        ("/status", Value::from(status_of(&guest))),
    ];
    for (pointer, value) in expected {
        let found = report.pointer(pointer).cloned().unwrap_or(Value::Null);
        if found != value {
            return Err(e2e_fail(run, format!("JSON {pointer} is {found}, expected {value}")));
        }
    }
    if rax != Some(guest.rax) {
        return Err(e2e_fail(
            run,
            format!(
                "JSON /rax is {}, expected {} (the guest's {}-byte word)",
                report.pointer("/rax").cloned().unwrap_or(Value::Null),
                guest.rax,
                mode.result_width()
            ),
        ));
    }
    if run.output.status != Some(status_of(&guest)) {
        return Err(e2e_fail(
            run,
            format!("exit status {:?}, expected {}", run.output.status, status_of(&guest)),
        ));
    }
    Ok(())
}
