//! Lab 4: exit handling on made-up exits (no KVM), then the loop on guests made for each run.
//!
//! The probe hands the judge's exits to `handle_exit`, and runs the judge's guests through the
//! student's labs 1 to 4 as kvm-hello does; it reports what the console received, the counts the
//! lab filled in, RAX and the result slot. Every guest prints text drawn for this run and leaves
//! values drawn for this run, so the judge knows what a correct run shows from how it made the
//! guest: the counts count only where the output confirms them (one OUT per byte printed).

use std::time::Duration;

use grader_protocol::lab4::{
    CheckResults, Exit, FailingKvmRun, Flow, GuestRun, HandleExits, LoopError, ReadResultSlot, ResultError, RunGuest,
    TracedExit, UnexpectedExit,
};
use kit_common::{CONSOLE_PORT, Mode, Status};

use super::{GUEST_TIMEOUT, Group, expect_field, fail, fail_one_of};
use crate::guestgen::{self, Guest};
use crate::rng::Rng;
use crate::{Check, Ctx, Part, Stop, describe};

const LAB: u8 = 4;
/// The exit the probe hands `handle_exit` for "any other reason", as `UnexpectedExit::from_exit`
/// names it (kvm-ioctls' variant, `VcpuExit::IrqWindowOpen`).
const OTHER_EXIT_NAME: &str = "IrqWindowOpen";
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
/// Checks that need KVM but no other lab: the probe makes the vCPU itself.
const KVM_ONLY: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: true,
};
const HANDLE: &str = "handle_exit";
/// How long run_until_halt may take to return a failed KVM_RUN before it counts as retrying.
const RETURN_WAIT: Duration = Duration::from_secs(2);
const RUN: &str = "run_until_halt";
/// What a guest run printed comes from handle_exit, on the exits run_until_halt hands it: a
/// difference has either as its cause (the loop's first: the checks of handle_exit alone run
/// before, and a failure of theirs is pointed to instead).
const LOOP_OR_HANDLER: &str = "run_until_halt/handle_exit";
/// The same, for bytes an OUT of several bytes brings (handle_exit's part first).
const HANDLER_OR_LOOP: &str = "handle_exit/run_until_halt";
/// The checks of handle_exit and of the result functions alone: a failure of theirs explains
/// a guest run's.
const EXIT_HANDLING: &[&str] = &[
    "lab4_console_output",
    "lab4_hlt_ends_the_loop",
    "lab4_unexpected_exits",
    "lab4_result_slot",
    "lab4_check_results",
];
/// The value kvm-hello-world's checks want in RAX and at 0x400 (the assignment's 42).
const EXPECTED: u64 = 42;
/// The modes a lab-4 guest runs in on every host (paged32 needs VMX or SVM: `HostNeed::Paged32`).
const MODES: [Mode; 3] = [Mode::Real, Mode::Protected, Mode::Long];

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
    GUEST
        .check(
            "lab4_hello_long_mode",
            "a long-mode guest made for the run: its text, exits and results",
            3,
            hello_long_mode,
        )
        .explained_by(EXIT_HANDLING),
    GUEST
        .check(
            "lab4_hello_real_mode",
            "a real-mode guest made for the run: its text, exits and results",
            2,
            hello_real_mode,
        )
        .explained_by(EXIT_HANDLING),
    GUEST
        .check(
            "lab4_string_io",
            "rep outsb, 4- and 2-byte OUTs print all their bytes",
            2,
            string_io,
        )
        .explained_by(EXIT_HANDLING),
    GUEST
        .check("lab4_stops_at_hlt", "the loop stops at the first HLT", 2, stops_at_hlt)
        .explained_by(EXIT_HANDLING),
    GUEST
        .check(
            "lab4_unexpected_exit_ends_the_run",
            "an OUT to another port ends the run",
            1,
            unexpected_exit_ends_the_run,
        )
        .explained_by(EXIT_HANDLING),
    GUEST
        .check(
            "lab4_wrong_results_are_caught",
            "wrong RAX, wrong memory, wrong width",
            2,
            wrong_results_are_caught,
        )
        .explained_by(EXIT_HANDLING),
    GUEST
        .check(
            "lab4_trace_every_exit",
            "run_until_halt calls its trace callback once per exit",
            1,
            trace_every_exit,
        )
        .explained_by(EXIT_HANDLING),
    KVM_ONLY.check(
        "lab4_kvm_run_errors",
        "run_until_halt returns a failed KVM_RUN (EINTR) as an error",
        1,
        kvm_run_errors,
    ),
];

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn console_output(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let text = rng.text_between(2, 64);
    let handled = ctx.call(&HandleExits {
        exits: vec![Exit::IoOut {
            port: CONSOLE_PORT,
            data: text.clone(),
        }],
    })?;
    let flow = match handled.results.first() {
        Some(Ok(flow)) => *flow,
        Some(Err(err)) => return Err(fail(LAB, HANDLE, format!("an OUT to 0xE9 gave {err:?}")).into()),
        None => return Err(fail(LAB, HANDLE, "the probe reported no result for the OUT").into()),
    };
    if handled.console != text {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "an OUT of {} bytes {} to 0xE9 printed {}: print the whole data slice (size x count bytes: a 4-byte OUT or a rep outsb brings several)",
                text.len(),
                show(&text),
                show(&handled.console)
            ),
        )
        .into());
    }
    if flow != Flow::Continue {
        return Err(fail(
            LAB,
            HANDLE,
            format!("an OUT to 0xE9 gave {flow:?}, expected Flow::Continue: the guest goes on after printing"),
        )
        .into());
    }
    let counts = handled.counts;
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
    )?;
    Ok(())
}

/// One to four console OUTs, then HLT: only the HLT may say Halt.
fn hlt_ends_the_loop(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    // At least one OUT: a handle_exit that says Halt to everything passes nothing.
    let outs = rng.range(1, 5) as usize;
    let mut exits: Vec<Exit> = (0..outs)
        .map(|_| Exit::IoOut {
            port: CONSOLE_PORT,
            data: rng.text_between(1, 8),
        })
        .collect();
    exits.push(Exit::Hlt);
    let handled = ctx.call(&HandleExits { exits })?;
    for (i, result) in handled.results.iter().enumerate() {
        let (expected, what) = if i == outs {
            (Flow::Halt, "HLT")
        } else {
            (Flow::Continue, "an OUT to 0xE9")
        };
        if *result != Ok(expected) {
            let why = if expected == Flow::Halt {
                "the guest is done, leave the loop"
            } else {
                "the guest goes on after printing"
            };
            return Err(fail(
                LAB,
                HANDLE,
                format!("{what} gave {result:?}, expected Ok({expected:?}) (Flow::{expected:?}): {why}"),
            )
            .into());
        }
    }
    if handled.results.len() != outs + 1 {
        return Err(fail(LAB, HANDLE, "the probe did not report every exit").into());
    }
    expect_field(
        LAB,
        HANDLE,
        "counts.hlt after one HLT",
        handled.counts.hlt,
        1,
        describe::hex,
        "count the HLT exit too",
    )?;
    Ok(())
}

fn unexpected_exits(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let port = loop {
        let port = rng.range(0x10, 0x400) as u16;
        if port != CONSOLE_PORT {
            break port;
        }
    };
    // Two bytes at least: an OUT written only in part shows.
    let text = rng.text_between(2, 8);
    let refused = rng.text_between(1, 4);
    let mmio = rng.range(0x20_0000, 0xf000_0000) & !3;
    let mut cases = vec![
        (
            Exit::IoOut {
                port: CONSOLE_PORT,
                data: text.clone(),
            },
            None,
            "an OUT to port 0xe9".to_owned(),
        ),
        (
            Exit::IoOut {
                port,
                data: refused.clone(),
            },
            Some(UnexpectedExit::IoOut {
                port,
                len: refused.len(),
            }),
            format!("an OUT of {} byte(s) to port {port:#x}", refused.len()),
        ),
        (
            Exit::IoIn {
                port: CONSOLE_PORT,
                len: 1,
            },
            Some(UnexpectedExit::IoIn {
                port: CONSOLE_PORT,
                len: 1,
            }),
            format!("an IN from port {CONSOLE_PORT:#x}"),
        ),
        (
            Exit::MmioRead { addr: mmio, len: 4 },
            Some(UnexpectedExit::MmioRead { addr: mmio, len: 4 }),
            format!("an MMIO read at {mmio:#x}"),
        ),
        (
            Exit::Shutdown,
            Some(UnexpectedExit::Shutdown),
            "a triple fault".to_owned(),
        ),
        (
            Exit::Other,
            Some(UnexpectedExit::Other(OTHER_EXIT_NAME.to_owned())),
            format!("an exit of another reason ({OTHER_EXIT_NAME})"),
        ),
    ];
    rng.shuffle(&mut cases);
    let handled = ctx.call(&HandleExits {
        exits: cases.iter().map(|(exit, _, _)| exit.clone()).collect(),
    })?;
    if handled.results.len() != cases.len() {
        return Err(fail(LAB, HANDLE, "the probe did not report every exit").into());
    }
    for ((_, expected, what), result) in cases.iter().zip(&handled.results) {
        match (expected, result) {
            (None, Ok(Flow::Continue)) => {}
            (Some(expected), Err(LoopError::Unexpected(found))) if found == expected => {}
            (None, other) => {
                return Err(fail(
                    LAB,
                    HANDLE,
                    format!(
                        "{what} gave {other:?}, expected Ok(Flow::Continue): the console is served, then the guest goes on"
                    ),
                )
                .into());
            }
            (Some(expected), other) => {
                return Err(fail(
                    LAB,
                    HANDLE,
                    format!(
                        "{what} gave {other:?}, expected Err(ExitLoopError::Unexpected({expected:?})): the VMM serves only OUT to 0xE9 and HLT; anything else ends the run with a diagnostic"
                    ),
                )
                .into());
            }
        }
    }
    if handled.console != text {
        // Only the refused OUT's bytes on the console show that another port was printed.
        let other_port_printed = !refused.is_empty()
            && handled
                .console
                .windows(refused.len())
                .any(|window| window == refused.as_slice())
            && !text.windows(refused.len()).any(|window| window == refused.as_slice());
        let what = if other_port_printed {
            format!(
                "the console got {}, which holds the {} written to port {port:#x}; expected only the {} written to port 0xe9: only port 0xE9 is the console",
                show(&handled.console),
                show(&refused),
                show(&text)
            )
        } else {
            format!(
                "after an OUT to 0xe9, one to port {port:#x}, an IN, an MMIO read, a triple fault and an {OTHER_EXIT_NAME} exit, the console {}",
                super::output_difference(&handled.console, &text)
            )
        };
        return Err(fail(LAB, HANDLE, what).into());
    }
    let c = handled.counts;
    let found = (c.io_out, c.io_in, c.mmio, c.shutdown, c.other);
    if found != (2, 1, 1, 1, 1) {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "after two OUTs (one refused), an IN, an MMIO read, a triple fault and an {OTHER_EXIT_NAME} exit the counts are (io_out, io_in, mmio, shutdown, other) = {found:?}, expected (2, 1, 1, 1, 1): count every exit by reason, also the ones you refuse, and any reason without a field in other"
            ),
        )
        .into());
    }
    Ok(())
}

fn result_slot(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    // Every byte non-zero, so a read of the wrong width or place shows.
    let value = rng.next_u64() | 0x0101_0101_0101_0101;
    let memory = vec![(0x3f8, rng.next_u64() | 1), (0x400, value), (0x408, rng.next_u64() | 1)];
    let mut widths = [(2, value & 0xffff), (4, value & 0xffff_ffff), (8, value)];
    rng.shuffle(&mut widths);
    let found = ctx.call(&ReadResultSlot {
        memory,
        widths: widths.iter().map(|&(width, _)| width).collect(),
    })?;
    for ((width, expected), found) in widths.into_iter().zip(found) {
        let found = found.map_err(|err| {
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

/// A value that is not 42, below `limit`.
fn wrong_below(rng: &mut Rng, limit: u64) -> u64 {
    loop {
        let value = rng.range(0, limit);
        if value != EXPECTED {
            break value;
        }
    }
}

fn check_results(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let (a, b, c) = (
        wrong_below(&mut rng, 1 << 40),
        wrong_below(&mut rng, 1 << 40),
        wrong_below(&mut rng, 1 << 40),
    );
    let mut cases = [
        ((EXPECTED, EXPECTED), Ok(())),
        ((a, EXPECTED), Err(ResultError::Rax(a))),
        ((EXPECTED, b), Err(ResultError::Memory(b))),
        ((c, c), Err(ResultError::Rax(c))),
    ];
    rng.shuffle(&mut cases);
    let found = ctx.call(&CheckResults {
        cases: cases.iter().map(|&(pair, _)| pair).collect(),
    })?;
    for (((rax, memory), expected), found) in cases.into_iter().zip(found) {
        if found != expected {
            return Err(fail(
                LAB,
                "check_results",
                format!(
                    "check_results(rax = {rax}, memory = {memory}) gave {found:?}, expected {expected:?}: RAX is checked first, then the memory, both against 42"
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn wire_mode(mode: Mode) -> grader_protocol::lab4::Mode {
    use grader_protocol::lab4::Mode as W;
    match mode {
        Mode::Real => W::Real,
        Mode::Protected => W::Protected,
        Mode::Paged32 => W::Paged32,
        Mode::Long => W::Long,
    }
}

/// Runs a guest through the labs under test, as kvm-hello does.
fn run_guest(ctx: &mut Ctx, mode: Mode, image: &[u8], trace: bool) -> Result<GuestRun, Stop> {
    ctx.call(&RunGuest {
        mode: wire_mode(mode),
        image: image.to_vec(),
        timeout_ms: GUEST_TIMEOUT.as_millis() as u64,
        trace,
    })
}

/// Names a failed run as a student should read it.
fn run_failure(run: &GuestRun, what: &str) -> Option<Stop> {
    let status = run.status;
    if status == Status::Ok.code() {
        return None;
    }
    let message = &run.message;
    Some(if status == Status::Timeout.code() {
        fail(
            LAB,
            RUN,
            format!(
                "{what}: {message} (did run_until_halt leave the loop at HLT, and return a failed KVM_RUN as an error?)"
            ),
        )
        .into()
    } else if status == Status::NotImplemented.code() {
        super::stub_reached(message)
    } else if status == Status::LabPanicked.code() {
        Stop::Failed(message.clone())
    } else {
        fail(LAB, RUN, format!("{what}: {message}")).into()
    })
}

/// The output must be the guest's, byte for byte: the effect that confirms the exits.
fn expect_output(run: &GuestRun, guest: &Guest, function: &str, what: &str, tail: &str) -> Result<(), Stop> {
    if run.output == guest.output {
        return Ok(());
    }
    Err(fail(
        LAB,
        function,
        format!("{what} {}{tail}", super::output_difference(&run.output, &guest.output)),
    )
    .into())
}

/// The exits of a run whose output matched: one OUT per byte and the HLT, each counted once.
fn expect_exits(run: &GuestRun, guest: &Guest, what: &str) -> Result<(), Stop> {
    let c = run.counts;
    let out = guest.exits.saturating_sub(1);
    if (c.total(), c.io_out, c.hlt) != (guest.exits, out, 1) {
        // The counts are filled in by handle_exit, on the exits run_until_halt gives it: the
        // numbers cannot tell which of the two miscounted.
        return Err(fail_one_of(
            LAB,
            &[RUN, HANDLE],
            format!(
                "{what} made {} exits (io_out {}, hlt {}), expected {} (io_out {out}, hlt 1): run_until_halt makes one KVM_RUN per exit and hands each exit to handle_exit once; handle_exit counts it once under its reason",
                c.total(),
                c.io_out,
                c.hlt,
                guest.exits
            ),
        )
        .into());
    }
    Ok(())
}

/// Runs a guest that halts with the 42s and expects a run that succeeds with its output and its
/// exits.
fn expect_run(ctx: &mut Ctx, mode: Mode, guest: &Guest, what: &str) -> Result<GuestRun, Stop> {
    let run = run_guest(ctx, mode, &guest.image, false)?;
    if let Some(stop) = run_failure(&run, what) {
        return Err(stop);
    }
    expect_output(&run, guest, LOOP_OR_HANDLER, what, "")?;
    expect_exits(&run, guest, what)?;
    Ok(run)
}

/// Runs a guest that halts with other values than the 42s: the run ends as a wrong result,
/// after its whole output, its exits, with the guest's RAX and the guest's word at 0x400.
fn expect_wrong_result(ctx: &mut Ctx, mode: Mode, guest: &Guest, what: &str) -> Result<(), Stop> {
    let run = run_guest(ctx, mode, &guest.image, false)?;
    judge_wrong_result(&run, mode, guest, what)
}

/// `expect_wrong_result` on a run already made.
fn judge_wrong_result(run: &GuestRun, mode: Mode, guest: &Guest, what: &str) -> Result<(), Stop> {
    if run.status != Status::WrongResult.code()
        && let Some(stop) = run_failure(run, what)
    {
        return Err(stop);
    }
    expect_output(run, guest, LOOP_OR_HANDLER, what, "")?;
    expect_exits(run, guest, what)?;
    let mask = guestgen::word_mask(mode);
    let rax = run.rax.map(|rax| rax & mask);
    if rax != Some(guest.rax) {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "{what} stopped with RAX = {}, expected {:#x}, which the guest sets just before its HLT: the loop runs the guest until its HLT",
                rax.map_or("unknown".to_owned(), describe::hex),
                guest.rax
            ),
        )
        .into());
    }
    if run.memory_0x400 != Some(guest.result) {
        return Err(fail(
            LAB,
            "read_result_slot",
            format!(
                "{what} stored {:#x} at 0x400 as a {}-byte word, the run read {}: read the mode's word (2 bytes in real mode, 4 in 32-bit modes, 8 in long mode)",
                guest.result,
                mode.result_width(),
                run.memory_0x400.map_or("nothing".to_owned(), describe::hex)
            ),
        )
        .into());
    }
    if run.status == Status::Ok.code() {
        return Err(fail(
            LAB,
            "check_results",
            format!(
                "{what} halted with RAX = {} and {} at 0x400, and the run passed the result checks: both must be 42",
                guest.rax, guest.result
            ),
        )
        .into());
    }
    Ok(())
}

/// Values for a guest that must fail the result checks: RAX wrong, or RAX right and memory wrong.
fn wrong_values(rng: &mut Rng, mode: Mode) -> (u64, u64) {
    let limit = guestgen::word_mask(mode).min(u64::MAX - 1) + 1;
    if rng.chance(50) {
        (wrong_below(rng, limit), rng.next_u64())
    } else {
        (EXPECTED, wrong_below(rng, limit))
    }
}

/// A guest made for this run that succeeds and one that fails the result checks, each with its
/// own text, in a random order: memorised output, counts or results cannot pass both.
fn expect_hello(ctx: &mut Ctx, mode: Mode) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let good = guestgen::returning(mode, &rng.text_between(3, 40), EXPECTED, EXPECTED, rng.next_u64());
    let (rax, result) = wrong_values(&mut rng, mode);
    // Texts of two lengths: no count filled in without running matches both guests.
    let text = loop {
        let text = rng.text_between(3, 40);
        if text.len() != good.output.len() {
            break text;
        }
    };
    let bad = guestgen::returning(mode, &text, rax, result, rng.next_u64());
    let good_what = format!(
        "a {mode}-mode guest made for this run ({} bytes of text, then RAX = 42 and 42 at 0x400)",
        good.output.len()
    );
    let bad_what = format!(
        "a {mode}-mode guest made for this run ({} bytes of text, then RAX = {} and {} at 0x400)",
        bad.output.len(),
        bad.rax,
        bad.result
    );
    if rng.chance(50) {
        expect_run(ctx, mode, &good, &good_what)?;
        expect_wrong_result(ctx, mode, &bad, &bad_what)?;
    } else {
        expect_wrong_result(ctx, mode, &bad, &bad_what)?;
        expect_run(ctx, mode, &good, &good_what)?;
    }
    Ok(())
}

fn hello_long_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    expect_hello(ctx, Mode::Long)
}

fn hello_real_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    expect_hello(ctx, Mode::Real)
}

fn string_io(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let rep = guestgen::long_mode_rep_outsb(&rng.text_between(5, 60));
    let wide = guestgen::long_mode_wide_outs(&rng.text_between(5, 60), &mut || rng.range(1, 5) as usize);
    let tail = "; an OUT exit carries size x count bytes: print them all";
    let rep_what = format!(
        "a guest made for this run, printing {} bytes with one rep outsb",
        rep.output.len()
    );
    let wide_what = format!(
        "a guest made for this run, printing {} bytes with 4-, 2- and 1-byte OUTs",
        wide.output.len()
    );
    let mut runs = [(rep, rep_what, false), (wide, wide_what, true)];
    rng.shuffle(&mut runs);
    for (guest, what, exact_exits) in &runs {
        let run = run_guest(ctx, Mode::Long, &guest.image, false)?;
        if let Some(stop) = run_failure(&run, what) {
            return Err(stop);
        }
        expect_output(&run, guest, HANDLER_OR_LOOP, what, tail)?;
        // A rep outsb makes as many exits as the host's KVM chooses; a plain OUT makes one.
        if *exact_exits {
            expect_exits(&run, guest, what)?;
        }
    }
    Ok(())
}

fn stops_at_hlt(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let first = rng.text_between(1, 12);
    let (rax, result) = (wrong_below(&mut rng, 1 << 40), rng.next_u64());
    let guest = guestgen::long_mode_halt_then_print(&first, rax, result, &rng.text_between(1, 12));
    let run = run_guest(ctx, Mode::Long, &guest.image, false)?;
    if run.output.len() > first.len() || run.counts.hlt > 1 {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "the guest ran on after its HLT (it printed {}, {} HLT exits): leave the loop at the first HLT",
                show(&run.output),
                run.counts.hlt
            ),
        )
        .into());
    }
    let what = format!(
        "a guest made for this run that prints {} bytes and halts with RAX = {rax}",
        first.len()
    );
    judge_wrong_result(&run, Mode::Long, &guest, &what)
}

/// A guest made for this run that must succeed, in a random mode with junk after its result
/// slot: an error path is never tested alone, so code that fails everything (or reads the slot
/// too wide) gains nothing.
fn expect_success(ctx: &mut Ctx, rng: &mut Rng) -> Result<(), Stop> {
    let mode = *rng.pick(&MODES);
    let guest = guestgen::returning(mode, &rng.text_between(1, 12), EXPECTED, EXPECTED, rng.next_u64() | 1);
    let what = format!("a {mode}-mode guest made for this run that halts normally");
    expect_run(ctx, mode, &guest, &what).map(drop)
}

fn unexpected_exit_ends_the_run(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let narrow = loop {
        let port = rng.range(0x10, 0x100) as u8;
        if u16::from(port) != CONSOLE_PORT {
            break port;
        }
    };
    let wide = rng.range(0x100, 0x1_0000) as u16;
    let mut cases = vec![
        (
            guestgen::long_mode_odd_port(&rng.text_between(1, 10), narrow, &rng.text_between(1, 10)),
            u16::from(narrow),
        ),
        (
            guestgen::long_mode_odd_port_dx(&rng.text_between(1, 10), wide, &rng.text_between(1, 10)),
            wide,
        ),
    ];
    rng.shuffle(&mut cases);
    let success_first = rng.chance(50);
    if success_first {
        expect_success(ctx, &mut rng)?;
    }
    for (guest, port) in &cases {
        odd_port_ends_the_run(ctx, guest, *port)?;
    }
    if !success_first {
        expect_success(ctx, &mut rng)?;
    }
    Ok(())
}

fn odd_port_ends_the_run(ctx: &mut Ctx, guest: &Guest, port: u16) -> Result<(), Stop> {
    let what = format!("a guest writing to port {port:#x}");
    let run = run_guest(ctx, Mode::Long, &guest.image, false)?;
    if run.status == Status::WrongResult.code() {
        return Err(fail(
            LAB,
            LOOP_OR_HANDLER,
            format!(
                "the run of {what} ended as if the guest had halted there (then: {}): an exit other than OUT to 0xE9 and HLT was swallowed; it must end the run with ExitLoopError::Unexpected",
                run.message
            ),
        )
        .into());
    }
    if run.status == Status::Ok.code() {
        return Err(fail(
            LAB,
            HANDLE,
            format!(
                "{what} ran to the end: an OUT to any port but 0xE9 must end the run with ExitLoopError::Unexpected"
            ),
        )
        .into());
    }
    if run.status != Status::GuestFault.code() || !run.message.contains(&format!("port {port:#x}")) {
        return Err(run_failure(&run, &what).unwrap_or_else(|| fail(LAB, RUN, &run.message).into()));
    }
    // What the guest printed before the refused OUT confirms the count.
    expect_output(&run, guest, LOOP_OR_HANDLER, &format!("{what}, before it,"), "")?;
    expect_field(
        LAB,
        LOOP_OR_HANDLER,
        "counts.io_out",
        run.counts.io_out,
        guest.exits,
        describe::hex,
        "one per byte the guest printed, and the refused OUT is counted too",
    )?;
    Ok(())
}

fn wrong_results_are_caught(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut cases = Vec::new();
    let mode = *rng.pick(&MODES);
    let rax = wrong_below(&mut rng, guestgen::word_mask(mode).min(1 << 31));
    cases.push((
        mode,
        guestgen::returning(mode, &rng.text_between(0, 8), rax, EXPECTED, rng.next_u64()),
        format!("made for this run in {mode} mode with RAX = {rax}"),
        format!("RAX is {rax} ("),
    ));
    let mode = *rng.pick(&MODES);
    let memory = wrong_below(&mut rng, guestgen::word_mask(mode).min(1 << 31));
    cases.push((
        mode,
        guestgen::returning(mode, &rng.text_between(0, 8), EXPECTED, memory, rng.next_u64()),
        format!("made for this run in {mode} mode with {memory} at 0x400"),
        format!("memory at 0x400 is {memory} ("),
    ));
    // 42 in the low byte only: a read of one byte passes it.
    let mode = *rng.pick(&[Mode::Real, Mode::Protected]);
    let memory = EXPECTED | rng.range(1, 0x100) << 8;
    cases.push((
        mode,
        guestgen::returning(mode, &rng.text_between(0, 8), EXPECTED, memory, rng.next_u64()),
        format!(
            "made for this run in {mode} mode with the {}-byte word {memory} ({memory:#x}) at 0x400",
            mode.result_width()
        ),
        format!("memory at 0x400 is {memory} ("),
    ));
    rng.shuffle(&mut cases);
    let success_first = rng.chance(50);
    if success_first {
        expect_success(ctx, &mut rng)?;
    }
    for (mode, guest, name, needle) in &cases {
        let run = run_guest(ctx, *mode, &guest.image, false)?;
        if run.status == Status::WrongResult.code() && run.message.contains(needle.as_str()) {
            continue;
        }
        if run.status != Status::WrongResult.code() && run.status != Status::Ok.code() {
            return Err(
                run_failure(&run, &format!("the guest {name}")).unwrap_or_else(|| fail(LAB, RUN, &run.message).into())
            );
        }
        // A run that passed: the checks let a wrong value through, or the slot read gave 42.
        // Another wrong value: the one read (the slot, or RAX after a run that did not reach
        // the guest's HLT) is not the guest's.
        let (got, causes) = if run.status == Status::Ok.code() {
            ("a run that passed".to_owned(), ["check_results", "read_result_slot"])
        } else if needle.starts_with("RAX") {
            (format!("{:?}", run.message), [RUN, "check_results"])
        } else {
            (format!("{:?}", run.message), ["read_result_slot", RUN])
        };
        return Err(fail_one_of(
            LAB,
            &causes,
            format!(
                "the guest {name} should fail with \"{}\", got {got}: read the slot at the mode's width and compare both values with 42",
                needle.trim_end_matches(" (")
            ),
        )
        .into());
    }
    if !success_first {
        expect_success(ctx, &mut rng)?;
    }
    Ok(())
}

fn trace_every_exit(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let text = rng.text_between(3, 30);
    let guest = guestgen::returning(Mode::Long, &text, EXPECTED, EXPECTED, 0);
    let what = "a guest made for this run";
    let run = run_guest(ctx, Mode::Long, &guest.image, true)?;
    if let Some(stop) = run_failure(&run, what) {
        return Err(stop);
    }
    expect_output(&run, &guest, LOOP_OR_HANDLER, what, "")?;
    // The output confirms the guest's exits (one OUT per byte, then its HLT); the counts are
    // handle_exit's, graded by the other checks, not evidence about the trace.
    let traced = run.traced.clone().unwrap_or_default();
    if traced.len() as u64 != guest.exits {
        return Err(fail(
            LAB,
            RUN,
            format!(
                "a guest made for this run printed all its {} bytes, one OUT each, then halted: {} exits, but the trace callback saw {}: call trace(&exit) once for every exit, before handling it (--trace and --explain show exits through it)",
                text.len(),
                guest.exits,
                traced.len()
            ),
        )
        .into());
    }
    let expected = text
        .iter()
        .map(|&byte| TracedExit {
            kind: "io out".into(),
            port: Some(CONSOLE_PORT),
            data: vec![byte],
        })
        .chain([TracedExit {
            kind: "hlt".into(),
            port: None,
            data: Vec::new(),
        }]);
    for (i, (found, expected)) in traced.iter().zip(expected).enumerate() {
        if *found != expected {
            return Err(fail(
                LAB,
                RUN,
                format!(
                    "the trace callback's exit {} was {} {:?} {}, expected {} {:?} {}: give trace each exit as KVM_RUN returned it",
                    i + 1,
                    found.kind,
                    found.port,
                    show(&found.data),
                    expected.kind,
                    expected.port,
                    show(&expected.data)
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn kvm_run_errors(ctx: &mut Ctx) -> Result<(), Stop> {
    // A RAX drawn for this run: KVM copies it into kvm_run only when KVM_RUN is really called.
    let rax = ctx.rng().next_u64() | 1;
    let failed = ctx.call(&FailingKvmRun {
        wait_ms: RETURN_WAIT.as_millis() as u64,
        rax,
    })?;
    match failed.returned {
        Some(Err(LoopError::Run { errno, .. })) if errno == libc::EINTR => {
            if failed.synced_rax == Some(rax) {
                return Ok(());
            }
            Err(fail(
                LAB,
                RUN,
                "run_until_halt returned Err(ExitLoopError::Run(EINTR)) without calling KVM_RUN (the vCPU's registers never came back from KVM): call vcpu.run() and return the error it gives",
            )
            .into())
        }
        None => Err(fail(
            LAB,
            RUN,
            format!(
                "KVM_RUN failed with EINTR and run_until_halt had not returned after {} s: it retries a failed KVM_RUN; return the error (ExitLoopError::Run), or a kicked vCPU is never stopped",
                RETURN_WAIT.as_secs()
            ),
        )
        .into()),
        Some(Ok(())) => Err(fail(
            LAB,
            RUN,
            "KVM_RUN failed with EINTR and run_until_halt returned Ok(()): a failed KVM_RUN was swallowed; return it as Err(ExitLoopError::Run(err))",
        )
        .into()),
        Some(Err(other)) => Err(fail(
            LAB,
            RUN,
            format!(
                "KVM_RUN failed with EINTR and run_until_halt returned Err({other:?}): return the ioctl's own error, as ExitLoopError::Run(err)"
            ),
        )
        .into()),
    }
}
