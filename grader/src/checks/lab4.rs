//! Lab 4: exit handling on made-up exits (no KVM), then the loop on real guests.

use std::time::Duration;

use kit_common::{Mode, Status};
use kvm_hello::vmm::{self, RunConfig, RunReport};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::{ExitCounts, ExitLoopError, Flow, ResultError, UnexpectedExit};
use vm_memory::{Bytes, GuestAddress};

use super::{GUEST_TIMEOUT, Group, expect_field, fail};
use crate::guestgen::{self, Guest};
use crate::rng::Rng;
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
/// Checks that need KVM but no other lab: the grader makes the vCPU itself.
const KVM_ONLY: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: true,
};
const HANDLE: &str = "handle_exit";
/// How long run_until_halt may take to return a failed KVM_RUN before it counts as retrying.
const RETURN_WAIT: Duration = Duration::from_secs(2);
const RUN: &str = "run_until_halt";

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
    GUEST.check(
        "lab4_trace_every_exit",
        "run_until_halt calls its trace callback once per exit",
        1,
        trace_every_exit,
    ),
    KVM_ONLY.check(
        "lab4_kvm_run_errors",
        "run_until_halt returns a failed KVM_RUN (EINTR) as an error",
        1,
        kvm_run_errors,
    ),
];

fn console_output(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let text = rng.text_between(2, 64);
    let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
    let flow = (ctx.labs.handle_exit)(VcpuExit::IoOut(0xE9, &text), &mut console, &mut counts)
        .map_err(|err| fail(LAB, HANDLE, format!("an OUT to 0xE9 gave {err}")))?;
    if console != text {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "an OUT of {} bytes {:?} to 0xE9 printed {:?}: print the whole data slice (size x count bytes: a 4-byte OUT or a rep outsb brings several)",
                text.len(),
                String::from_utf8_lossy(&text),
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

/// One exit of `unexpected_exits`, owned so the cases can be shuffled.
enum ExitCase {
    /// An OUT to the console: served.
    Console(Vec<u8>),
    Out(u16, Vec<u8>),
    In(u16),
    MmioRead(u64),
    Shutdown,
}

fn unexpected_exits(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let port = loop {
        let port = rng.range(0x10, 0x400) as u16;
        if port != kit_common::CONSOLE_PORT {
            break port;
        }
    };
    let text = rng.text_between(1, 8);
    let mmio = rng.range(0x20_0000, 0xf000_0000) & !3;
    let mut cases = vec![
        ExitCase::Console(text.clone()),
        ExitCase::Out(port, rng.text_between(1, 4)),
        ExitCase::In(kit_common::CONSOLE_PORT),
        ExitCase::MmioRead(mmio),
        ExitCase::Shutdown,
    ];
    rng.shuffle(&mut cases);
    let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
    for case in cases {
        let (mut byte, mut word) = ([0u8; 1], [0u8; 4]);
        let (exit, expected, what) = match &case {
            ExitCase::Console(data) => (
                VcpuExit::IoOut(kit_common::CONSOLE_PORT, data),
                None,
                "an OUT to port 0xe9".to_owned(),
            ),
            ExitCase::Out(port, data) => (
                VcpuExit::IoOut(*port, data),
                Some(UnexpectedExit::IoOut {
                    port: *port,
                    len: data.len(),
                }),
                format!("an OUT of {} byte(s) to port {port:#x}", data.len()),
            ),
            ExitCase::In(port) => (
                VcpuExit::IoIn(*port, &mut byte),
                Some(UnexpectedExit::IoIn { port: *port, len: 1 }),
                format!("an IN from port {port:#x}"),
            ),
            ExitCase::MmioRead(addr) => (
                VcpuExit::MmioRead(*addr, &mut word),
                Some(UnexpectedExit::MmioRead { addr: *addr, len: 4 }),
                format!("an MMIO read at {addr:#x}"),
            ),
            ExitCase::Shutdown => (
                VcpuExit::Shutdown,
                Some(UnexpectedExit::Shutdown),
                "a triple fault".to_owned(),
            ),
        };
        let result = (ctx.labs.handle_exit)(exit, &mut console, &mut counts);
        match (expected, result) {
            (None, Ok(Flow::Continue)) => {}
            (Some(expected), Err(ExitLoopError::Unexpected(found))) if found == expected => {}
            (None, other) => {
                return Err(fail(
                    LAB,
                    HANDLE,
                    format!(
                        "{what} gave {other:?}, expected Ok(Flow::Continue): the console is served, then the guest goes on"
                    ),
                ));
            }
            (Some(expected), other) => {
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
    if console != text {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "the console got {:?}, expected only the {:?} written to port 0xe9: only port 0xE9 is the console (port {port:#x} is not)",
                String::from_utf8_lossy(&console),
                String::from_utf8_lossy(&text)
            ),
        ));
    }
    let found = (counts.io_out, counts.io_in, counts.mmio, counts.shutdown);
    if found != (2, 1, 1, 1) {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "after two OUTs (one refused), an IN, an MMIO read and a triple fault the counts are (io_out, io_in, mmio, shutdown) = {found:?}, expected (2, 1, 1, 1): count every exit by reason, also the ones you refuse"
            ),
        ));
    }
    Ok(())
}

fn result_slot(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let memory = super::lab2::fresh_memory();
    // Every byte non-zero, so a read of the wrong width or place shows.
    let value = rng.next_u64() | 0x0101_0101_0101_0101;
    memory
        .write_obj::<u64>(value, GuestAddress(0x400))
        .expect("inside guest memory");
    memory
        .write_obj::<u64>(rng.next_u64() | 1, GuestAddress(0x408))
        .expect("inside guest memory");
    memory
        .write_obj::<u64>(rng.next_u64() | 1, GuestAddress(0x3f8))
        .expect("inside guest memory");
    let mut widths = [(2, value & 0xffff), (4, value & 0xffff_ffff), (8, value)];
    rng.shuffle(&mut widths);
    for (width, expected) in widths {
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
    let mut rng = ctx.rng();
    let wrong = |rng: &mut Rng| loop {
        let value = rng.range(0, 1 << 40);
        if value != 42 {
            break value;
        }
    };
    let (a, b, c) = (wrong(&mut rng), wrong(&mut rng), wrong(&mut rng));
    let mut cases = [
        ((42, 42), Ok(())),
        ((a, 42), Err(ResultError::Rax(a))),
        ((42, b), Err(ResultError::Memory(b))),
        ((c, c), Err(ResultError::Rax(c))),
    ];
    rng.shuffle(&mut cases);
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

/// Runs `guest` and compares its output and, when `exact_exits`, its exits with a correct run's.
fn expect_run(ctx: &Ctx, mode: Mode, guest: &Guest, what: &str, exact_exits: bool) -> Result<RunReport, String> {
    let report = run_guest(ctx, mode, &guest.image);
    if let Some(message) = run_failure(&report, what) {
        return Err(message);
    }
    if report.output != guest.output {
        return Err(fail(
            LAB,
            RUN,
            format!("{what} {}", super::output_difference(&report.output, &guest.output)),
        ));
    }
    let c = report.counts;
    let out = guest.exits.saturating_sub(1);
    if exact_exits && (c.total(), c.io_out, c.hlt) != (guest.exits, out, 1) {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "{what} made {} exits (io_out {}, hlt {}), expected {} (io_out {out}, hlt 1): one KVM_RUN per exit, each counted once under its reason",
                c.total(),
                c.io_out,
                c.hlt,
                guest.exits
            ),
        ));
    }
    Ok(report)
}

/// The kit's guest (the assignment's greeting and 42s) and a guest made for this run, in a
/// random order: memorised output or counts cannot pass both.
fn expect_hello(ctx: &Ctx, mode: Mode, image: &[u8], what: &str) -> Result<(), String> {
    let mut rng = ctx.rng();
    let text = rng.text_between(3, 40);
    let made = match mode {
        Mode::Real => guestgen::real_mode(&text, 42, 42),
        _ => guestgen::long_mode(&text, 42, 42),
    };
    let kit = Guest {
        image: image.to_vec(),
        output: b"Hello, world!\n".to_vec(),
        exits: 15,
        rax: 42,
        result: 42,
    };
    let made_what = format!("a {mode}-mode guest made for this run ({} bytes of text)", text.len());
    let mut runs = [(kit, what.to_owned()), (made, made_what)];
    rng.shuffle(&mut runs);
    for (guest, what) in &runs {
        expect_run(ctx, mode, guest, what, true)?;
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
    let mut rng = ctx.rng();
    let text = rng.text_between(5, 60);
    let what = format!(
        "a guest made for this run, printing {} bytes with one rep outsb",
        text.len()
    );
    let report = run_guest(ctx, Mode::Long, &guestgen::long_mode_rep_outsb(&text).image);
    if let Some(message) = run_failure(&report, &what) {
        return Err(message);
    }
    if report.output != text {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "{what} {}; an OUT exit carries size x count bytes: print them all",
                super::output_difference(&report.output, &text)
            ),
        ));
    }
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

/// A guest made for this run that must succeed: an error path is never tested alone, so code
/// that fails everything gains nothing.
fn expect_success(ctx: &Ctx, rng: &mut Rng) -> Result<(), String> {
    let guest = guestgen::long_mode(&rng.text_between(1, 12), 42, 42);
    expect_run(
        ctx,
        Mode::Long,
        &guest,
        "a guest made for this run that halts normally",
        true,
    )
    .map(drop)
}

fn unexpected_exit_ends_the_run(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let port = loop {
        let port = rng.range(0x10, 0x100) as u8;
        if u16::from(port) != kit_common::CONSOLE_PORT {
            break port;
        }
    };
    let made = guestgen::long_mode_odd_port(&rng.text_between(1, 10), port, &rng.text_between(1, 10));
    let mut cases = vec![
        (corpus("odd-port").to_vec(), 0x3f8u16, 1u64),
        (made.image, u16::from(port), made.exits),
    ];
    rng.shuffle(&mut cases);
    let success_first = rng.chance(50);
    if success_first {
        expect_success(ctx, &mut rng)?;
    }
    for (image, port, out_exits) in cases {
        odd_port_ends_the_run(ctx, &image, port, out_exits)?;
    }
    if !success_first {
        expect_success(ctx, &mut rng)?;
    }
    Ok(())
}

fn odd_port_ends_the_run(ctx: &Ctx, image: &[u8], port: u16, io_out: u64) -> Result<(), String> {
    let what = format!("a guest writing to port {port:#x}");
    let report = run_guest(ctx, Mode::Long, image);
    match &report.failure {
        Some(failure) if failure.status == Status::WrongResult => Err(fail(
            LAB,
            HANDLE,
            format!(
                "the run of {what} ended as if the guest had halted there (then: {}): an exit other than OUT to 0xE9 and HLT was swallowed; it must end the run with ExitLoopError::Unexpected",
                failure.message
            ),
        )),
        Some(failure)
            if failure.status == Status::GuestFault && failure.message.contains(&format!("port {port:#x}")) =>
        {
            expect_field(
                LAB,
                HANDLE,
                "counts.io_out",
                report.counts.io_out,
                io_out.max(1),
                describe::hex,
                "the refused OUT is counted too",
            )
        }
        _ => Err(run_failure(&report, &what).unwrap_or_else(|| {
            fail(
                LAB,
                HANDLE,
                format!(
                    "{what} ran to the end: an OUT to any port but 0xE9 must end the run with ExitLoopError::Unexpected"
                ),
            )
        })),
    }
}

fn wrong_results_are_caught(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let wrong = |rng: &mut Rng| loop {
        let value = rng.range(0, 1 << 31) as u32;
        if value != 42 {
            break value;
        }
    };
    let (rax, memory) = (wrong(&mut rng), wrong(&mut rng));
    let made_rax = guestgen::long_mode(b"", rax, 42).image;
    let made_memory = guestgen::long_mode(b"", 42, memory).image;
    let mut cases = vec![
        (
            "wrong-rax".to_owned(),
            Mode::Long,
            "RAX is 41 (".to_owned(),
            corpus("wrong-rax").to_vec(),
        ),
        (
            "wrong-memory".to_owned(),
            Mode::Long,
            "memory at 0x400 is 7 (".to_owned(),
            corpus("wrong-memory").to_vec(),
        ),
        (
            "wrong-width".to_owned(),
            Mode::Real,
            "memory at 0x400 is 298 (".to_owned(),
            corpus("wrong-width").to_vec(),
        ),
        (
            format!("made for this run with RAX = {rax}"),
            Mode::Long,
            format!("RAX is {rax} ("),
            made_rax,
        ),
        (
            format!("made for this run with {memory} at 0x400"),
            Mode::Long,
            format!("memory at 0x400 is {memory} ("),
            made_memory,
        ),
    ];
    rng.shuffle(&mut cases);
    let success_first = rng.chance(50);
    if success_first {
        expect_success(ctx, &mut rng)?;
    }
    for (name, mode, needle, image) in cases {
        let report = run_guest(ctx, mode, &image);
        match &report.failure {
            Some(failure) if failure.status == Status::WrongResult && failure.message.contains(needle.as_str()) => {}
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
                        "the guest {name} should fail with \"{}\", got {:?}: read the slot at the mode's width and compare both values with 42",
                        needle.trim_end_matches(" ("),
                        other.as_ref().map(|f| f.message.as_str())
                    ),
                ));
            }
        }
    }
    if !success_first {
        expect_success(ctx, &mut rng)?;
    }
    Ok(())
}

fn trace_every_exit(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let text = rng.text_between(3, 30);
    let guest = guestgen::long_mode(&text, 42, 42);
    let report = vmm::run(RunConfig {
        labs: ctx.labs,
        mode: Mode::Long,
        image: guest.image.clone(),
        capture_output: true,
        trace: false,
        timeout: GUEST_TIMEOUT,
        // The explanation records every exit through the trace callback.
        explain_walk: Some(kit_common::RESULT_ADDR),
        program: vmm::Program::Hello,
    });
    if let Some(message) = run_failure(&report, "a guest made for this run") {
        return Err(message);
    }
    let traced = report.explanation.map(|e| e.exits.len() as u64).unwrap_or_default();
    let exits = report.counts.total();
    if traced != exits || exits != guest.exits {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "a guest with {} exits ran {exits} exits but the trace callback saw {traced}: call trace(&exit) once for every exit, before handling it (--trace and --explain show exits through it)",
                guest.exits
            ),
        ));
    }
    Ok(())
}

/// What the lab's loop did with a KVM_RUN that fails at once.
fn run_with_failing_kvm_run(labs: crate::Labs) -> Result<Result<(), ExitLoopError>, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|err| format!("the grader cannot open /dev/kvm: {err}"))?;
    let vm = kvm
        .create_vm()
        .map_err(|err| format!("the grader cannot create a VM: {err}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|err| format!("the grader cannot create a vCPU: {err}"))?;
    // With immediate_exit set, KVM_RUN returns EINTR before it enters the guest, every time:
    // what a VMM sees when its vCPU is kicked (the watchdog does exactly this).
    vcpu.set_kvm_immediate_exit(1);
    let returned = super::on_lab_thread("kvm-run", RETURN_WAIT, move || {
        let _vm = vm;
        let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
        (labs.run_until_halt)(&mut vcpu, &mut console, &mut counts, &mut |_| {})
    })?;
    returned.ok_or_else(|| {
        fail(
            LAB,
            RUN,
            format!(
                "KVM_RUN failed with EINTR and run_until_halt had not returned after {} s: it retries a failed KVM_RUN; return the error (ExitLoopError::Run), or a kicked vCPU is never stopped",
                RETURN_WAIT.as_secs()
            ),
        )
    })
}

fn kvm_run_errors(ctx: &Ctx) -> Result<(), String> {
    match run_with_failing_kvm_run(ctx.labs)? {
        Err(ExitLoopError::Run(err)) if err.errno() == libc::EINTR => Ok(()),
        Ok(()) => Err(fail(
            LAB,
            RUN,
            "KVM_RUN failed with EINTR and run_until_halt returned Ok(()): a failed KVM_RUN was swallowed; return it as Err(ExitLoopError::Run(err))",
        )),
        Err(other) => Err(fail(
            LAB,
            RUN,
            format!(
                "KVM_RUN failed with EINTR and run_until_halt returned Err({other:?}): return the ioctl's own error, as ExitLoopError::Run(err)"
            ),
        )),
    }
}
