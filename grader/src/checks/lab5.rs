//! Lab 5: the host side of hypercalls, checked on made-up exits, then on the hypercall guest.

use std::time::Duration;

use kit_common::{Mode, Status};
use kvm_hello::vmm::{self, Program, RunConfig, RunReport};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::{ExitCounts, Flow};
use lab5_hypercalls::{Host, HypercallRecord, Lab5Error, REPORT_ADDR};
use vm_memory::{Bytes, GuestAddress};

use super::{Group, fail};
use crate::{Check, Ctx, Part};

const LAB: u8 = 5;
/// Checks of single functions: no KVM.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
/// Checks that translate addresses with the student's lab 2 walker.
const WALK: Group = Group {
    part: Part::Lab(LAB),
    needs: &[2],
    runs_guest: false,
};
/// Checks that run the hypercall guest, set up by labs 1 to 3.
const GUEST: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3],
    runs_guest: true,
};

/// The checks of lab 5.
pub const CHECKS: &[Check] = &[
    PURE.check(
        "lab5_print32bit",
        "handle_hypercall: print32bit prints decimal and a newline",
        1,
        print32bit,
    ),
    PURE.check(
        "lab5_num_exits",
        "handle_hypercall: num_exits counts this exit too",
        1,
        num_exits,
    ),
    PURE.check(
        "lab5_write_exit_report",
        "write_exit_report: \"IO in: X\\nIO out: Y\\n\" at 0x5000",
        2,
        exit_report,
    ),
    WALK.check(
        "lab5_read_guest_string",
        "read_guest_string: through the page tables, to the NUL",
        2,
        guest_string,
    ),
    WALK.check(
        "lab5_gva_to_hva",
        "gva_to_hva: host base + guest physical, None when unmapped",
        2,
        gva_to_hva,
    ),
    GUEST.check(
        "lab5_hypercall_guest",
        "the hypercall guest's whole output",
        3,
        hypercall_guest,
    ),
    GUEST.check(
        "lab5_print_str_in_one_exit",
        "print_str costs one exit; 44 exits in all",
        2,
        one_exit,
    ),
    GUEST.check(
        "lab5_gva_to_hva_live",
        "gva_to_hva(0x400) = memory_host_base + 0x400",
        2,
        gva_to_hva_live,
    ),
    super::e2e::HYPERCALLS,
];

/// The output of `guest/hypercalls/hypercalls.rs`.
pub const EXPECTED_OUTPUT: &str = "Hello from the hypercall guest!\n2048\n4294967295\nThis line costs one exit.\n35\n37\nIO in: 3\nIO out: 37\nInvalid GVA\n";

fn serve(
    ctx: &Ctx,
    exit: VcpuExit<'_>,
    counts: ExitCounts,
) -> Result<(Vec<u8>, Vec<HypercallRecord>, ExitCounts, Flow), String> {
    let memory = super::lab2::fresh_memory();
    let mut host = Host::new(&memory, 0x2000, 0x7f00_0000_0000);
    host.counts = counts;
    let mut console = Vec::new();
    let flow =
        (ctx.labs.handle_hypercall)(exit, &mut host, &mut console).map_err(|err| fail(LAB, "handle_hypercall", err))?;
    Ok((console, host.records, host.counts, flow))
}

fn print32bit(ctx: &Ctx) -> Result<(), String> {
    let (console, records, counts, flow) = serve(
        ctx,
        VcpuExit::IoOut(0xEA, &2048u32.to_le_bytes()),
        ExitCounts::default(),
    )?;
    if console != b"2048\n" {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "print32bit(2048) printed {:?}, expected \"2048\\n\": the value is the OUT's 4 data bytes, little-endian, printed in decimal with a newline",
                String::from_utf8_lossy(&console)
            ),
        ));
    }
    let expected = [HypercallRecord {
        name: "print32bit",
        args: vec![2048],
        result: None,
    }];
    if records != expected || counts.io_out != 1 || flow != Flow::Continue {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "print32bit(2048) gave records {records:?}, io_out {}, {flow:?}; expected {expected:?}, 1, Continue: record each hypercall with host.record",
                counts.io_out
            ),
        ));
    }
    Ok(())
}

fn num_exits(ctx: &Ctx) -> Result<(), String> {
    let mut data = [0u8; 4];
    let before = ExitCounts {
        io_out: 9,
        ..ExitCounts::default()
    };
    let (_, records, _, _) = serve(ctx, VcpuExit::IoIn(0xEB, &mut data), before)?;
    let answered = u32::from_le_bytes(data);
    if answered != 10 {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "num_exits after 9 exits answered {answered}, expected 10: count the exit first; the answer includes this one (the guest relies on it: two calls around one print_str differ by 2)"
            ),
        ));
    }
    match records.as_slice() {
        [
            HypercallRecord {
                name: "num_exits",
                result: Some(10),
                ..
            },
        ] => Ok(()),
        other => Err(fail(
            LAB,
            "handle_hypercall",
            format!("num_exits was recorded as {other:?}, expected one record with result 10"),
        )),
    }
}

fn exit_report(ctx: &Ctx) -> Result<(), String> {
    let memory = super::lab2::fresh_memory();
    let counts = ExitCounts {
        io_in: 3,
        io_out: 37,
        hlt: 0,
        ..ExitCounts::default()
    };
    let addr = (ctx.labs.write_exit_report)(&memory, &counts).map_err(|err| fail(LAB, "write_exit_report", err))?;
    if addr != REPORT_ADDR {
        return Err(fail(
            LAB,
            "write_exit_report",
            format!("returned {addr:#x}, expected {REPORT_ADDR:#x}, where the report is"),
        ));
    }
    let expected = b"IO in: 3\nIO out: 37\n\0";
    let mut found = [0u8; 21];
    memory
        .read_slice(&mut found, GuestAddress(REPORT_ADDR))
        .expect("inside guest memory");
    if &found != expected {
        return Err(fail(
            LAB,
            "write_exit_report",
            format!(
                "0x5000 holds {:?}, expected {:?} (with a NUL at the end: print_str reads up to it)",
                String::from_utf8_lossy(&found),
                String::from_utf8_lossy(expected)
            ),
        ));
    }
    Ok(())
}

fn identity_map() -> vm_memory::GuestMemoryMmap {
    let memory = super::lab2::fresh_memory();
    for (addr, entry) in [(0x2000u64, 0x3007u64), (0x3000, 0x4007), (0x4000, 0x87)] {
        memory
            .write_obj(entry, GuestAddress(addr))
            .expect("inside guest memory");
    }
    memory
}

fn guest_string(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    memory
        .write_slice(b"across a page\0", GuestAddress(0x6ffa))
        .expect("inside guest memory");
    let found =
        (ctx.labs.read_guest_string)(&memory, 0x2000, 0x6ffa).map_err(|err| fail(LAB, "read_guest_string", err))?;
    if found != b"across a page" {
        return Err(fail(
            LAB,
            "read_guest_string",
            format!(
                "the string at 0x6ffa (it crosses into the next page) read as {:?}, expected \"across a page\" without its NUL",
                String::from_utf8_lossy(&found)
            ),
        ));
    }
    memory
        .write_slice(&[b'x'; 5000], GuestAddress(0x8000))
        .expect("inside guest memory");
    let cases = [
        (0x8000, "a string with no NUL within 4096 bytes"),
        (0x4000_0000, "an address no page table entry maps"),
    ];
    for (gva, what) in cases {
        match (ctx.labs.read_guest_string)(&memory, 0x2000, gva) {
            Err(Lab5Error::BadAddress { .. }) => {}
            other => {
                return Err(fail(
                    LAB,
                    "read_guest_string",
                    format!(
                        "{what} ({gva:#x}) gave {:?}, expected Err(Lab5Error::BadAddress): a guest must not make the host read without end or outside its memory",
                        other.map(|b| String::from_utf8_lossy(&b).chars().take(20).collect::<String>())
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn gva_to_hva(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    let base = 0x7f12_3400_0000;
    for (gva, expected) in [
        (0x400, Some(base + 0x400)),
        (0x1f_fff8, Some(base + 0x1f_fff8)),
        (0x4000_0000, None),
    ] {
        let found = (ctx.labs.gva_to_hva)(&memory, 0x2000, base, gva);
        if found != expected {
            return Err(fail(
                LAB,
                "gva_to_hva",
                format!(
                    "gva_to_hva({gva:#x}) with host_base {base:#x} gave {found:x?}, expected {expected:x?}: translate to the guest physical address, then add host_base"
                ),
            ));
        }
    }
    Ok(())
}

fn run_guest(ctx: &Ctx) -> Result<RunReport, String> {
    let report = vmm::run(RunConfig {
        labs: ctx.labs,
        mode: Mode::Long,
        image: guests::HYPERCALLS64.to_vec(),
        capture_output: true,
        trace: false,
        timeout: Duration::from_secs(3),
        explain_walk: None,
        program: Program::Hypercalls,
    });
    match &report.failure {
        None => Ok(report),
        Some(failure) if failure.status == Status::NotImplemented => super::stub_reached(&failure.message),
        Some(failure) if failure.status == Status::LabPanicked => Err(failure.message.clone()),
        Some(failure) => Err(fail(
            LAB,
            "handle_hypercall",
            format!("the hypercall guest: {}", failure.message),
        )),
    }
}

fn hypercall_guest(ctx: &Ctx) -> Result<(), String> {
    let report = run_guest(ctx)?;
    let output = String::from_utf8_lossy(&report.output);
    if output != EXPECTED_OUTPUT {
        let line = output
            .lines()
            .zip(EXPECTED_OUTPUT.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(output.lines().count());
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "the hypercall guest printed {output:?}, expected {EXPECTED_OUTPUT:?} (they part at line {}; the book's port table says what each call prints)",
                line + 1
            ),
        ));
    }
    Ok(())
}

fn one_exit(ctx: &Ctx) -> Result<(), String> {
    let report = run_guest(ctx)?;
    let records = report.hypercalls.unwrap_or_default();
    let answers: Vec<u64> = records
        .iter()
        .filter(|r| r.name == "num_exits")
        .filter_map(|r| r.result)
        .collect();
    if answers.len() != 2 || answers[1] != answers[0] + 2 {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "the two num_exits around one print_str answered {answers:?}, expected two numbers 2 apart: print_str must cost exactly one exit"
            ),
        ));
    }
    let total = report.counts.total();
    if total != 44 {
        return Err(fail(
            LAB,
            "run_hypercalls",
            format!("the hypercall guest made {total} exits, expected 44 (one per hypercall, and the HLT)"),
        ));
    }
    Ok(())
}

fn gva_to_hva_live(ctx: &Ctx) -> Result<(), String> {
    let report = run_guest(ctx)?;
    let base = report.memory_host_base.unwrap_or_default();
    let calls: Vec<(u64, Option<u64>)> = report
        .hypercalls
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.name == "gva_to_hva")
        .map(|r| (r.args.first().copied().unwrap_or_default(), r.result))
        .collect();
    let expected = [(0x400, Some(base + 0x400)), (0x4000_0000, Some(0))];
    if calls != expected {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "gva_to_hva was recorded as {calls:x?}, expected {expected:x?} (memory_host_base {base:#x}; an unmapped address answers 0 and prints \"Invalid GVA\")"
            ),
        ));
    }
    Ok(())
}
