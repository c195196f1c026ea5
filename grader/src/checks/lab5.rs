//! Lab 5: the host side of hypercalls, checked on made-up exits, then on the hypercall guest.

use kit_common::{Mode, Status};
use kvm_hello::vmm::{self, Program, RunConfig, RunReport};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::{ExitCounts, Flow};
use lab5_hypercalls::{Host, HypercallRecord, Lab5Error, MAX_STRING, REPORT_ADDR};
use vm_memory::{Bytes, GuestAddress};

use super::{Group, fail};
use crate::walker::{self, RandomTables};
use crate::{Check, Ctx, Part, guestgen};

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
    WALK.check(
        "lab5_gva_to_hva_hypercall",
        "the gva_to_hva hypercall reads the GVA from its slot and writes the HVA back",
        2,
        gva_to_hva_hypercall,
    ),
    WALK.check(
        "lab5_gva_to_hva_outside_memory",
        "gva_to_hva: None for a guest physical address past guest memory",
        1,
        gva_to_hva_outside_memory,
    ),
    GUEST.check(
        "lab5_hypercall_guest",
        "the hypercall guest's whole output, and a guest made for this run",
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

/// Why a printed number differs from `value` in decimal with a newline.
fn number_format(printed: &[u8], value: u32) -> &'static str {
    let text = String::from_utf8_lossy(printed);
    let swapped = u32::from_be_bytes(value.to_le_bytes());
    if text == value.to_string() {
        "the newline is missing"
    } else if text.trim_end() == format!("{value:x}") || text.trim_end() == format!("{value:#x}") {
        "the number was printed in hex"
    } else if text.trim_end() == swapped.to_string() {
        "the data bytes were read big-endian"
    } else if text.trim_end() == (value as i32).to_string() {
        "the number was printed as signed"
    } else {
        "the number is not the OUT's value"
    }
}

fn print32bit(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    // A value with a high bit set now and then, and every byte significant.
    let value = rng.range(0x0101_0101, 0xffff_ffff) as u32;
    let (console, records, counts, flow) =
        serve(ctx, VcpuExit::IoOut(0xEA, &value.to_le_bytes()), ExitCounts::default())?;
    if console != format!("{value}\n").as_bytes() {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "print32bit({value}) printed {:?}, expected \"{value}\\n\": {}; the value is the OUT's 4 data bytes, little-endian, printed in decimal with a newline",
                String::from_utf8_lossy(&console),
                number_format(&console, value)
            ),
        ));
    }
    let expected = [HypercallRecord {
        name: "print32bit",
        args: vec![value.into()],
        result: None,
    }];
    if records != expected || counts.io_out != 1 || flow != Flow::Continue {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "print32bit({value}) gave records {records:?}, io_out {}, {flow:?}; expected {expected:?}, 1, Continue: record each hypercall with host.record",
                counts.io_out
            ),
        ));
    }
    Ok(())
}

fn num_exits(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let mut data = [0u8; 4];
    let before = ExitCounts {
        io_out: rng.range(1, 500),
        io_in: rng.range(0, 50),
        ..ExitCounts::default()
    };
    let prior = before.total();
    let expected = prior + 1;
    let (_, records, _, _) = serve(ctx, VcpuExit::IoIn(0xEB, &mut data), before)?;
    let answered = u32::from_le_bytes(data);
    if u64::from(answered) != expected {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!(
                "num_exits after {prior} exits answered {answered}, expected {expected}: count the exit first; the answer includes this one (the guest relies on it: two calls around one print_str differ by 2)"
            ),
        ));
    }
    match records.as_slice() {
        [
            HypercallRecord {
                name: "num_exits",
                result: Some(result),
                ..
            },
        ] if *result == expected => Ok(()),
        other => Err(fail(
            LAB,
            "handle_hypercall",
            format!("num_exits was recorded as {other:?}, expected one record with result {expected}"),
        )),
    }
}

fn exit_report(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let memory = super::lab2::fresh_memory();
    let counts = ExitCounts {
        io_in: rng.range(1, 100_000),
        io_out: rng.range(1, 100_000),
        hlt: rng.range(0, 2),
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
    let expected = format!("IO in: {}\nIO out: {}\n\0", counts.io_in, counts.io_out).into_bytes();
    let expected = expected.as_slice();
    let mut found = vec![0u8; expected.len()];
    memory
        .read_slice(&mut found, GuestAddress(REPORT_ADDR))
        .expect("inside guest memory");
    if found != expected {
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
    let mut rng = ctx.rng();
    let memory = identity_map();
    let text = rng.text_between(2, 60);
    // Across a page boundary, at a place the lab cannot know.
    let page = rng.range(6, 0x1e0) * 0x1000;
    let at = page - rng.range(1, text.len() as u64);
    memory
        .write_slice(&text, GuestAddress(at))
        .expect("inside guest memory");
    memory
        .write_obj(0u8, GuestAddress(at + text.len() as u64))
        .expect("inside guest memory");
    let longest = vec![b'y'; MAX_STRING];
    let too_long_at = 0x1e_0000 + rng.range(0, 0x1000);
    memory
        .write_slice(&[b'x'; MAX_STRING + 8], GuestAddress(too_long_at))
        .expect("inside guest memory");
    let longest_at = 0x1f_0000 - rng.range(0x1000, 0x2000);
    memory
        .write_slice(&longest, GuestAddress(longest_at))
        .expect("inside guest memory");
    memory
        .write_obj(0u8, GuestAddress(longest_at + MAX_STRING as u64))
        .expect("inside guest memory");
    // A page the tables map far from its physical address: reading the GVA as a GPA shows.
    let (mapped_memory, mapped_cr3, mapped_gva, mapped_text) = remapped_string(&mut rng);
    let found = (ctx.labs.read_guest_string)(&mapped_memory, mapped_cr3, mapped_gva);
    if found.as_ref().ok() != Some(&mapped_text) {
        return Err(fail(
            LAB,
            "read_guest_string",
            format!(
                "a {}-byte string at {mapped_gva:#x}, on a page the tables map elsewhere (CR3 {mapped_cr3:#x}), read as {:?}: translate the address through the guest's page tables (lab 2's translate), then read guest physical memory",
                mapped_text.len(),
                found.map(|b| String::from_utf8_lossy(&b).chars().take(40).collect::<String>())
            ),
        ));
    }
    let mut cases: Vec<(u64, Option<Vec<u8>>, String)> = vec![
        (
            at,
            Some(text.clone()),
            format!("a {}-byte string across a page boundary", text.len()),
        ),
        (
            longest_at,
            Some(longest),
            format!("a string of exactly MAX_STRING = {MAX_STRING} bytes"),
        ),
        (
            too_long_at,
            None,
            format!("a string with no NUL within {MAX_STRING} bytes"),
        ),
        (
            0x4000_0000 + rng.range(0, 0x1000),
            None,
            "an address no page table entry maps".to_owned(),
        ),
    ];
    rng.shuffle(&mut cases);
    for (gva, expected, what) in cases {
        let found = (ctx.labs.read_guest_string)(&memory, 0x2000, gva);
        match (expected, found) {
            (Some(want), Ok(got)) if got == want => {}
            (Some(want), Ok(got)) => {
                return Err(fail(
                    LAB,
                    "read_guest_string",
                    format!(
                        "{what} at {gva:#x} read as {} bytes {:?}, expected {} bytes without the NUL{}",
                        got.len(),
                        String::from_utf8_lossy(&got).chars().take(40).collect::<String>(),
                        want.len(),
                        if got.len() < want.len() && want.len() > 100 {
                            ": a string may be up to MAX_STRING bytes long"
                        } else {
                            ": read up to the NUL, across pages, translating each page"
                        }
                    ),
                ));
            }
            (Some(want), Err(err)) => {
                return Err(fail(
                    LAB,
                    "read_guest_string",
                    format!(
                        "{what} at {gva:#x} gave Err({err}), expected its {} bytes{}",
                        want.len(),
                        if want.len() == MAX_STRING {
                            ": the limit is MAX_STRING bytes before the NUL, so a string of exactly that length is fine"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            (None, Err(Lab5Error::BadAddress { .. })) => {}
            (None, other) => {
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

/// A host address for guest physical 0 as mmap gives them (above 4 GiB, below 128 TiB, page
/// aligned), different on every run.
fn host_base(rng: &mut crate::rng::Rng) -> u64 {
    rng.range(0x5_0000_0000 >> 12, 0x7fff_0000_0000 >> 12) << 12
}

/// Random page tables and a string on one of their pages mapped inside guest memory: the
/// memory, CR3, the string's GVA and the string.
fn remapped_string(rng: &mut crate::rng::Rng) -> (vm_memory::GuestMemoryMmap, u64, u64, Vec<u8>) {
    loop {
        let memory = super::lab2::fresh_memory();
        let tables = RandomTables::build(&memory, rng);
        let (gva, gpa) = *rng.pick(&tables.in_memory);
        let text = rng.text_between(2, 40);
        let offset = rng.range(0, 0x1000 - text.len() as u64 - 1);
        memory
            .write_slice(&text, GuestAddress(gpa + offset))
            .expect("inside guest memory");
        memory
            .write_obj(0u8, GuestAddress(gpa + offset + text.len() as u64))
            .expect("inside guest memory");
        // A large page can cover the tables themselves: keep only a string that left its own
        // translation intact (the grader's walker is the oracle).
        if walker::walk(&memory, tables.cr3, gva + offset).result == Ok(gpa + offset) {
            return (memory, tables.cr3, gva + offset, text);
        }
    }
}

fn gva_to_hva(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let memory = identity_map();
    let base = host_base(&mut rng);
    let inside = rng.range(0, 0x20_0000);
    let mut cases = [
        (0x400, Some(base + 0x400)),
        (inside, Some(base + inside)),
        (0x4000_0000 + rng.range(0, 0x4000_0000), None),
    ];
    rng.shuffle(&mut cases);
    for (gva, expected) in cases {
        expect_hva(ctx, &memory, 0x2000, base, gva, expected)?;
    }
    // Tables that are not an identity map: a GVA taken for a GPA shows.
    let memory = super::lab2::fresh_memory();
    let tables = RandomTables::build(&memory, &mut rng);
    let mut addresses: Vec<u64> = tables
        .in_memory
        .iter()
        .map(|&(gva, _)| gva | rng.range(0, 0x1000))
        .collect();
    addresses.extend(tables.addresses.iter().take(8));
    rng.shuffle(&mut addresses);
    for gva in addresses {
        let expected = walker::walk(&memory, tables.cr3, gva)
            .result
            .ok()
            .filter(|gpa| *gpa < kit_common::GUEST_MEMORY_SIZE as u64)
            .map(|gpa| base + gpa);
        expect_hva(ctx, &memory, tables.cr3, base, gva, expected)?;
    }
    Ok(())
}

fn expect_hva(
    ctx: &Ctx,
    memory: &vm_memory::GuestMemoryMmap,
    cr3: u64,
    base: u64,
    gva: u64,
    expected: Option<u64>,
) -> Result<(), String> {
    let found = (ctx.labs.gva_to_hva)(memory, cr3, base, gva);
    if found == expected {
        return Ok(());
    }
    let cause = match found {
        Some(hva) if Some(hva) == expected.map(|e| e - base) => ": that is the guest physical address itself",
        Some(hva) if hva == base.wrapping_add(gva) => {
            ": that is host_base plus the GVA itself; these page tables do not map it to the same physical address"
        }
        Some(_) if expected.is_none() => ": this address does not translate, or translates outside guest memory",
        _ => "",
    };
    Err(fail(
        LAB,
        "gva_to_hva",
        format!(
            "gva_to_hva({gva:#x}) with host_base {base:#x} and CR3 {cr3:#x} gave {found:x?}, expected {expected:x?}{cause}: translate to the guest physical address, then add host_base"
        ),
    ))
}

/// Why the slot of a gva_to_hva hypercall holds `found` instead of `expected`.
fn slot_cause(found: u64, expected: u64, gva: u64, slot: u64, base: u64) -> &'static str {
    if found == gva {
        "the slot still holds the GVA: write the HVA back into it"
    } else if found == base.wrapping_add(slot) || found == slot {
        "that is the translation of the slot's own address: the OUT's value is where the GVA is stored; read the 8 bytes there and translate them"
    } else if found == expected & 0xffff_ffff || found & 0xffff_ffff == expected & 0xffff_ffff {
        "only the low 4 bytes are right: the slot holds 8 bytes, the whole HVA, little-endian"
    } else if found == expected.swap_bytes() {
        "the HVA was written big-endian: the guest reads it little-endian"
    } else if found == gva.wrapping_add(base) && gva != expected.wrapping_sub(base) {
        "the GVA plus host_base is not the HVA unless the page maps it there: translate it first"
    } else {
        "write gva_to_hva(the slot's GVA) into the slot, 8 bytes little-endian, and 0 when it does not translate"
    }
}

fn gva_to_hva_hypercall(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let base = host_base(&mut rng);
    let mut cases = [
        (rng.range(0, 0x20_0000), true),
        (0x4000_0000 + rng.range(0, 0x4000_0000), false),
    ];
    rng.shuffle(&mut cases);
    for (gva, mapped) in cases {
        let memory = identity_map();
        let slot = rng.range(0x6000 / 8, 0x1f_0000 / 8) * 8;
        memory.write_obj(gva, GuestAddress(slot)).expect("inside guest memory");
        let mut host = Host::new(&memory, 0x2000, base);
        let mut console = Vec::new();
        let port_value = (slot as u32).to_le_bytes();
        (ctx.labs.handle_hypercall)(VcpuExit::IoOut(0xEE, &port_value), &mut host, &mut console).map_err(|err| {
            fail(
                LAB,
                "handle_hypercall",
                format!("gva_to_hva with its slot at {slot:#x}: {err}"),
            )
        })?;
        let expected = if mapped { base + gva } else { 0 };
        let found: u64 = memory.read_obj(GuestAddress(slot)).expect("inside guest memory");
        if found != expected {
            return Err(fail(
                LAB,
                "handle_hypercall",
                format!(
                    "gva_to_hva with its slot at {slot:#x} (holding GVA {gva:#x}; host_base {base:#x}) left {found:#x} in the slot, expected {expected:#x}: {}",
                    slot_cause(found, expected, gva, slot, base)
                ),
            ));
        }
        let expected_output: &[u8] = if mapped { b"" } else { b"Invalid GVA\n" };
        if console != expected_output {
            return Err(fail(
                LAB,
                "handle_hypercall",
                format!(
                    "gva_to_hva of {} GVA printed {:?}, expected {:?}: only an address that does not translate prints \"Invalid GVA\"",
                    if mapped { "a mapped" } else { "an unmapped" },
                    String::from_utf8_lossy(&console),
                    String::from_utf8_lossy(expected_output)
                ),
            ));
        }
        let record = HypercallRecord {
            name: "gva_to_hva",
            args: vec![gva],
            result: Some(expected),
        };
        if host.records != [record.clone()] {
            return Err(fail(
                LAB,
                "handle_hypercall",
                format!(
                    "gva_to_hva was recorded as {:x?}, expected [{record:x?}]: record the GVA read from the slot and the HVA written back",
                    host.records
                ),
            ));
        }
    }
    Ok(())
}

fn gva_to_hva_outside_memory(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let memory = identity_map();
    // PD[1] maps the 2 MiB page just past the end of the guest's 2 MiB of memory.
    memory
        .write_obj::<u64>(0x20_0000 | 0x87, GuestAddress(0x4008))
        .expect("inside guest memory");
    let base = host_base(&mut rng);
    let mut cases = [
        (0x20_0000, None),
        (0x20_0000 + rng.range(0, 0x20_0000), None),
        (0x1f_fff8, Some(base + 0x1f_fff8)),
    ];
    rng.shuffle(&mut cases);
    for (gva, expected) in cases {
        let found = (ctx.labs.gva_to_hva)(&memory, 0x2000, base, gva);
        if found != expected {
            return Err(fail(
                LAB,
                "gva_to_hva",
                format!(
                    "gva_to_hva({gva:#x}) gave {found:x?}, expected {expected:x?}: a page table entry maps guest physical {gva:#x}, past the end of guest memory (2 MiB); the host address would point outside the VM's memory, so answer None"
                ),
            ));
        }
    }
    Ok(())
}

fn run_guest(ctx: &Ctx) -> Result<RunReport, String> {
    run_image(ctx, guests::HYPERCALLS64, "the hypercall guest")
}

fn run_image(ctx: &Ctx, image: &[u8], what: &str) -> Result<RunReport, String> {
    let report = vmm::run(RunConfig {
        labs: ctx.labs,
        mode: Mode::Long,
        image: image.to_vec(),
        capture_output: true,
        trace: false,
        timeout: super::GUEST_TIMEOUT,
        explain_walk: None,
        program: Program::Hypercalls,
    });
    match &report.failure {
        None => Ok(report),
        Some(failure) if failure.status == Status::NotImplemented => super::stub_reached(&failure.message),
        Some(failure) if failure.status == Status::LabPanicked => Err(failure.message.clone()),
        Some(failure) => Err(fail(LAB, "handle_hypercall", format!("{what}: {}", failure.message))),
    }
}

/// A hypercall guest made for this run: its output and exits cannot be known in advance.
fn made_hypercall_guest(ctx: &Ctx) -> Result<(), String> {
    let guest = guestgen::hypercalls(&mut ctx.rng());
    let what = "a hypercall guest made for this run (print8bit, print32bit, print_str)";
    let report = run_image(ctx, &guest.image, what)?;
    if report.output != guest.output {
        return Err(fail(
            LAB,
            "handle_hypercall",
            format!("{what} {}", super::output_difference(&report.output, &guest.output)),
        ));
    }
    let total = report.counts.total();
    if total != guest.exits {
        return Err(fail(
            LAB,
            "run_hypercalls",
            format!(
                "{what} made {total} exits, expected {} (one per hypercall, and the HLT)",
                guest.exits
            ),
        ));
    }
    Ok(())
}

fn hypercall_guest(ctx: &Ctx) -> Result<(), String> {
    if ctx.rng().chance(50) {
        made_hypercall_guest(ctx)?;
        kit_hypercall_guest(ctx)
    } else {
        kit_hypercall_guest(ctx)?;
        made_hypercall_guest(ctx)
    }
}

fn kit_hypercall_guest(ctx: &Ctx) -> Result<(), String> {
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
