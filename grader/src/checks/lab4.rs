//! Lab 4: exit handling on made-up exits (no KVM), then the loop on real guests.

use std::time::Duration;

use kit_common::{Mode, Status};
use kvm_hello::vmm::{self, RunConfig, RunReport};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::{ExitCounts, ExitLoopError, Flow, ResultError, UnexpectedExit};
use vm_memory::{Bytes, GuestAddress};

use super::{Group, expect_field, fail};
use crate::{Check, Ctx, Part, describe};

const LAB: u8 = 4;
/// Checks of exit handling alone: no KVM.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
/// Checks that run a guest, set up by labs 1 to 3.
const GUEST: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3],
    runs_guest: true,
};
const HANDLE: &str = "handle_exit";
const RUN: &str = "run_until_halt";
/// How long a guest of these checks may run.
const GUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The checks of lab 4.
pub const CHECKS: &[Check] = &[
    PURE.check(
        "lab4_console_output",
        "handle_exit prints every byte of an OUT to 0xE9",
        2,
        console_output,
    ),
    PURE.check(
        "lab4_hlt_ends_the_loop",
        "handle_exit: HLT says Flow::Halt",
        1,
        hlt_ends_the_loop,
    ),
    PURE.check(
        "lab4_unexpected_exits",
        "handle_exit counts and refuses every other exit",
        2,
        unexpected_exits,
    ),
    PURE.check(
        "lab4_result_slot",
        "read_result_slot reads 2, 4 or 8 bytes at 0x400",
        2,
        result_slot,
    ),
    PURE.check(
        "lab4_check_results",
        "check_results checks RAX, then memory",
        1,
        check_results,
    ),
    GUEST.check(
        "lab4_hello_long_mode",
        "the long-mode guest: 15 exits, greeting, 42s",
        3,
        hello_long_mode,
    ),
    GUEST.check(
        "lab4_hello_real_mode",
        "the real-mode guest: 15 exits, greeting, 42s",
        2,
        hello_real_mode,
    ),
    GUEST.check(
        "lab4_string_io",
        "rep outsb and 4-byte OUTs print all their bytes",
        2,
        string_io,
    ),
    GUEST.check("lab4_stops_at_hlt", "the loop stops at the first HLT", 2, stops_at_hlt),
    GUEST.check(
        "lab4_unexpected_exit_ends_the_run",
        "an OUT to another port ends the run",
        1,
        unexpected_exit_ends_the_run,
    ),
    GUEST.check(
        "lab4_wrong_results_are_caught",
        "wrong RAX, wrong memory, wrong width",
        2,
        wrong_results_are_caught,
    ),
];

fn console_output(ctx: &Ctx) -> Result<(), String> {
    let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
    let flow = (ctx.labs.handle_exit)(VcpuExit::IoOut(0xE9, b"Hell"), &mut console, &mut counts)
        .map_err(|err| fail(LAB, HANDLE, format!("an OUT to 0xE9 gave {err}")))?;
    if console != b"Hell" {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "an OUT of 4 bytes \"Hell\" to 0xE9 printed {:?}: print the whole data slice (size x count bytes: a 4-byte OUT or a rep outsb brings several)",
                String::from_utf8_lossy(&console)
            ),
        ));
    }
    if flow != Flow::Continue {
        return Err(fail(
            LAB,
            HANDLE,
            format!("an OUT to 0xE9 gave {flow:?}, expected Flow::Continue: the guest goes on after printing"),
        ));
    }
    expect_field(
        LAB,
        HANDLE,
        "counts.io_out after one OUT",
        counts.io_out,
        1,
        describe::hex,
        "one exit is one count, whatever its size",
    )?;
    expect_field(
        LAB,
        HANDLE,
        "counts.total() after one OUT",
        counts.total(),
        1,
        describe::hex,
        "count each exit under its reason only",
    )
}

fn hlt_ends_the_loop(ctx: &Ctx) -> Result<(), String> {
    let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
    match (ctx.labs.handle_exit)(VcpuExit::Hlt, &mut console, &mut counts) {
        Ok(Flow::Halt) => expect_field(
            LAB,
            HANDLE,
            "counts.hlt after one HLT",
            counts.hlt,
            1,
            describe::hex,
            "count the HLT exit too",
        ),
        other => Err(fail(
            LAB,
            HANDLE,
            format!("HLT gave {other:?}, expected Ok(Flow::Halt): the guest is done, leave the loop"),
        )),
    }
}

fn unexpected_exits(ctx: &Ctx) -> Result<(), String> {
    let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
    let mut byte = [0u8; 1];
    let mut mmio = [0u8; 4];
    let cases = [
        (
            VcpuExit::IoOut(0x3f8, b"x"),
            UnexpectedExit::IoOut { port: 0x3f8, len: 1 },
            "an OUT to port 0x3f8",
        ),
        (
            VcpuExit::IoIn(0xE9, &mut byte),
            UnexpectedExit::IoIn { port: 0xE9, len: 1 },
            "an IN from port 0xE9",
        ),
        (
            VcpuExit::MmioRead(0x1000_0000, &mut mmio),
            UnexpectedExit::MmioRead {
                addr: 0x1000_0000,
                len: 4,
            },
            "an MMIO read",
        ),
        (VcpuExit::Shutdown, UnexpectedExit::Shutdown, "a triple fault"),
    ];
    for (exit, expected, what) in cases {
        match (ctx.labs.handle_exit)(exit, &mut console, &mut counts) {
            Err(ExitLoopError::Unexpected(found)) if found == expected => {}
            other => {
                return Err(fail(
                    LAB,
                    HANDLE,
                    format!(
                        "{what} gave {other:?}, expected Err(ExitLoopError::Unexpected({expected:?})): the VMM serves only OUT to 0xE9 and HLT; anything else ends the run with a diagnostic"
                    ),
                ));
            }
        }
    }
    if !console.is_empty() {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "an OUT to port 0x3f8 printed {:?}: only port 0xE9 is the console",
                String::from_utf8_lossy(&console)
            ),
        ));
    }
    let found = (counts.io_out, counts.io_in, counts.mmio, counts.shutdown);
    if found != (1, 1, 1, 1) {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "after one exit of each kind the counts are (io_out, io_in, mmio, shutdown) = {found:?}, expected (1, 1, 1, 1): count every exit by reason, also the ones you refuse"
            ),
        ));
    }
    Ok(())
}

fn result_slot(ctx: &Ctx) -> Result<(), String> {
    let memory = super::lab2::fresh_memory();
    memory
        .write_obj::<u64>(0x1122_3344_5566_002a, GuestAddress(0x400))
        .expect("inside guest memory");
    memory
        .write_obj::<u64>(0x7777, GuestAddress(0x408))
        .expect("inside guest memory");
    for (width, expected) in [(2, 0x2a), (4, 0x5566_002a), (8, 0x1122_3344_5566_002a)] {
        let found = (ctx.labs.read_result_slot)(&memory, width).map_err(|err| {
            fail(
                LAB,
                "read_result_slot",
                format!("reading {width} bytes at 0x400 failed: {err}"),
            )
        })?;
        let why = "read exactly `width` bytes at 0x400, little-endian (the guest's word size: 2 in real mode, 4 in 32-bit modes, 8 in long mode)";
        expect_field(
            LAB,
            "read_result_slot",
            &format!("the {width}-byte value at 0x400"),
            found,
            expected,
            describe::hex,
            why,
        )?;
    }
    Ok(())
}

fn check_results(ctx: &Ctx) -> Result<(), String> {
    let cases = [
        ((42, 42), Ok(())),
        ((41, 42), Err(ResultError::Rax(41))),
        ((42, 7), Err(ResultError::Memory(7))),
        ((0, 0), Err(ResultError::Rax(0))),
    ];
    for ((rax, memory), expected) in cases {
        let found = (ctx.labs.check_results)(rax, memory);
        if found != expected {
            return Err(fail(
                LAB,
                "check_results",
                format!(
                    "check_results(rax = {rax}, memory = {memory}) gave {found:?}, expected {expected:?}: RAX is checked first, then the memory, both against 42"
                ),
            ));
        }
    }
    Ok(())
}

/// Runs a guest through the labs under test, as kvm-hello does.
pub fn run_guest(ctx: &Ctx, mode: Mode, image: &[u8]) -> RunReport {
    vmm::run(RunConfig {
        labs: ctx.labs,
        mode,
        image: image.to_vec(),
        capture_output: true,
        trace: false,
        timeout: GUEST_TIMEOUT,
        explain_walk: None,
        program: vmm::Program::Hello,
    })
}

/// Names a failed run as a student should read it.
fn run_failure(report: &RunReport, what: &str) -> Option<String> {
    let failure = report.failure.as_ref()?;
    let message = match failure.status {
        Status::Timeout => format!(
            "{what}: {} (did run_until_halt leave the loop at HLT, and return a failed KVM_RUN as an error?)",
            failure.message
        ),
        Status::NotImplemented => super::stub_reached(&failure.message),
        Status::LabPanicked => return Some(failure.message.clone()),
        _ => format!("{what}: {}", failure.message),
    };
    Some(fail(LAB, RUN, message))
}

fn expect_hello(ctx: &Ctx, mode: Mode, image: &[u8], what: &str) -> Result<(), String> {
    let report = run_guest(ctx, mode, image);
    if let Some(message) = run_failure(&report, what) {
        return Err(message);
    }
    let output = String::from_utf8_lossy(&report.output);
    if output != "Hello, world!\n" {
        return Err(fail(
            LAB,
            RUN,
            format!("{what} printed {output:?}, expected \"Hello, world!\\n\""),
        ));
    }
    let c = report.counts;
    if (c.total(), c.io_out, c.hlt) != (15, 14, 1) {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "{what} made {} exits (io_out {}, hlt {}), expected 15 (io_out 14, hlt 1): one KVM_RUN per exit, counted once",
                c.total(),
                c.io_out,
                c.hlt
            ),
        ));
    }
    Ok(())
}

fn hello_long_mode(ctx: &Ctx) -> Result<(), String> {
    expect_hello(ctx, Mode::Long, guests::HELLO64, "the long-mode guest")
}

fn hello_real_mode(ctx: &Ctx) -> Result<(), String> {
    expect_hello(ctx, Mode::Real, guests::HELLO16, "the real-mode guest")
}

fn corpus(name: &str) -> &'static [u8] {
    guests::CORPUS
        .iter()
        .find(|guest| guest.name == name)
        .map(|guest| guest.image)
        .expect("a guest of guest/corpus")
}

fn string_io(ctx: &Ctx) -> Result<(), String> {
    for (name, what) in [
        ("rep-outsb", "a guest printing with rep outsb"),
        ("out-wide", "a guest printing with 4- and 2-byte OUTs"),
    ] {
        let report = run_guest(ctx, Mode::Long, corpus(name));
        if let Some(message) = run_failure(&report, what) {
            return Err(message);
        }
        let output = String::from_utf8_lossy(&report.output);
        if output != "Hello, world!\n" {
            return Err(fail(
                LAB,
                HANDLE,
                format!(
                    "{what} printed {output:?}, expected \"Hello, world!\\n\": an OUT exit carries size x count bytes; print them all"
                ),
            ));
        }
    }
    Ok(())
}

/// Long mode: HLT, then an OUT of 'X' and HLT again: a loop that goes on after the first HLT prints X.
const HLT_THEN_PRINT: [u8; 11] = [0xf4, 0x66, 0xba, 0xe9, 0x00, 0xb0, 0x58, 0xee, 0xf4, 0xeb, 0xfe];

fn stops_at_hlt(ctx: &Ctx) -> Result<(), String> {
    let report = run_guest(ctx, Mode::Long, &HLT_THEN_PRINT);
    if !report.output.is_empty() || report.counts.hlt > 1 {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "the guest ran on after its HLT (it printed {:?}, {} HLT exits): leave the loop at the first HLT",
                String::from_utf8_lossy(&report.output),
                report.counts.hlt
            ),
        ));
    }
    match report.failure {
        // The guest's RAX is not 42: that is the only failure expected here.
        Some(ref failure) if failure.status == Status::WrongResult => Ok(()),
        _ => match run_failure(&report, "a guest that halts at once") {
            Some(message) => Err(message),
            None => Err(fail(
                LAB,
                "check_results",
                "a guest that halts with RAX = 0 passed the result checks",
            )),
        },
    }
}

fn unexpected_exit_ends_the_run(ctx: &Ctx) -> Result<(), String> {
    let report = run_guest(ctx, Mode::Long, corpus("odd-port"));
    match &report.failure {
        Some(failure) if failure.status == Status::GuestFault && failure.message.contains("port 0x3f8") => {
            expect_field(LAB, HANDLE, "counts.io_out", report.counts.io_out, 1, describe::hex, "the refused OUT is counted too")
        }
        _ => Err(run_failure(&report, "a guest writing to port 0x3f8").unwrap_or_else(|| {
            fail(LAB, HANDLE, "a guest writing to port 0x3f8 ran to the end: an OUT to any port but 0xE9 must end the run with ExitLoopError::Unexpected")
        })),
    }
}

fn wrong_results_are_caught(ctx: &Ctx) -> Result<(), String> {
    for (name, mode, needle) in [
        ("wrong-rax", Mode::Long, "RAX is 41"),
        ("wrong-memory", Mode::Long, "memory at 0x400 is 7"),
        ("wrong-width", Mode::Real, "memory at 0x400 is 298"),
    ] {
        let report = run_guest(ctx, mode, corpus(name));
        match &report.failure {
            Some(failure) if failure.status == Status::WrongResult && failure.message.contains(needle) => {}
            Some(failure) if failure.status != Status::WrongResult => {
                return Err(
                    run_failure(&report, &format!("the guest {name}")).unwrap_or_else(|| failure.message.clone())
                );
            }
            other => {
                return Err(fail(
                    LAB,
                    "check_results",
                    format!(
                        "the guest {name} should fail with \"{needle}\", got {:?}: read the slot at the mode's width and compare both values with 42",
                        other.as_ref().map(|f| f.message.as_str())
                    ),
                ));
            }
        }
    }
    Ok(())
}
