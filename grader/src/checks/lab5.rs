//! Lab 5: the host side of hypercalls, checked on made-up exits, then on guests made for the run.
//!
//! The pure checks hand the lab random values, random exit counts, random host bases and random
//! page tables (`walker::RandomTables`, whose walks are recorded as they are built): the judge
//! knows every answer from how it built the input. The guest checks run a guest generated for
//! this run (`guestgen::hypercalls`) through the student's VMM and judge what the guest printed:
//! the answers it got from num_exits and num_exits_by_type, the report it read back from guest
//! memory itself, the slots gva_to_hva wrote as it read them back. The counts the lab keeps
//! count only where that output confirms them.

use grader_protocol::lab2::{Level, Walk, WalkStep};
use grader_protocol::lab5::{
    Counts, Exit, Flow, GvaToHva, HypercallRun, Memory, ReadStrings, Record, RunHypercallGuest, Serve, Served,
    StringRead, WriteExitReport,
};

use super::{Group, fail};
use crate::facts::hypercall::{GVA_TO_HVA_PORT, NUM_EXITS_PORT, PRINT32_PORT, REPORT_ADDR};
use crate::facts::{PD_ADDR, PML4_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER};
use crate::guestgen::{CallKind, Expected, HypercallGuest, HypercallMix};
use crate::rng::Rng;
use crate::walker::{self, RandomTables};
use crate::{Check, Ctx, HostNeed, Part, Stop, guestgen};

const LAB: u8 = 5;
/// The longest string `print_str` reads, NUL excluded (the lab's `MAX_STRING`, the book's port
/// table).
const MAX_STRING: usize = 4096;
/// Guest memory: 2 MiB from guest physical 0 (kit_common::GUEST_MEMORY_SIZE).
const MEMORY_END: u64 = kit_common::GUEST_MEMORY_SIZE as u64;

/// Checks of single functions: no KVM.
pub(super) const PURE: Group = Group {
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
/// Checks that run a guest through the student's VMM, set up by labs 1 to 3 and ended by lab
/// 4's result checks.
pub(super) const GUEST: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3, 4],
    runs_guest: true,
};

/// The checks of lab 5; the last runs kvm-hello as a program.
pub const CHECKS: &[Check] = &[
    PURE.check(
        "lab5_print32bit",
        "handle_hypercall: print32bit prints decimal and a newline",
        1,
        print32bit,
    ),
    PURE.check(
        "lab5_num_exits",
        "handle_hypercall: num_exits counts this exit too; an exit that is no hypercall is counted, then refused",
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
        "read_guest_string: through random page tables, across pages, to the NUL",
        2,
        guest_string,
    ),
    WALK.check(
        "lab5_gva_to_hva",
        "gva_to_hva: host base + guest physical, None when unmapped (random tables)",
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
        "gva_to_hva: None for a guest physical address past guest memory (random tables too)",
        1,
        gva_to_hva_outside_memory,
    ),
    GUEST.check(
        "lab5_hypercall_guest",
        "a hypercall guest made for this run: its whole output and its exits",
        3,
        hypercall_guest,
    ),
    GUEST.check(
        "lab5_print_str_in_one_exit",
        "print_str costs one exit; num_exits answers a guest made for this run",
        2,
        one_exit,
    ),
    GUEST.check(
        "lab5_gva_to_hva_live",
        "gva_to_hva in a guest made for this run: the slots it reads back",
        2,
        gva_to_hva_live,
    ),
    Check {
        host: HostNeed::Kvm,
        ..GUEST_WITH_LAB5.check(
            "e2e_lab_hypercalls",
            "kvm-hello --lab hypercalls --guest (made for this run) --json: its output and report",
            2,
            lab_hypercalls_program,
        )
    },
];

/// kvm-hello as a program on lab 5's guest: labs 1 to 4, and lab 5's own checks first.
const GUEST_WITH_LAB5: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3, 4, 5],
    runs_guest: true,
};

/// A host address for guest physical 0 as mmap gives them (above 4 GiB, below 128 TiB, page
/// aligned), different on every run.
fn host_base(rng: &mut Rng) -> u64 {
    rng.range(0x5_0000_0000 >> 12, 0x7fff_0000_0000 >> 12) << 12
}

fn malformed(what: &str) -> Stop {
    Stop::Failed(format!(
        "the probe's answer is malformed ({what}): lab code must not write on descriptor 3"
    ))
}

fn record(name: &str, args: Vec<u64>, result: Option<u64>) -> Record {
    Record {
        name: name.to_owned(),
        args,
        result,
    }
}

/// `handle_hypercall` on one made-up exit with no memory to speak of (identity tables, a random
/// host base), from `counts`: what it returned, and what it left.
fn serve(ctx: &mut Ctx, rng: &mut Rng, counts: Counts, exit: Exit) -> Result<(Flow, Served), Stop> {
    let served = serve_any(ctx, rng, counts, exit)?;
    let flow = served.flow.clone().map_err(|err| fail(LAB, "handle_hypercall", err))?;
    Ok((flow, served))
}

/// The same, whatever `handle_hypercall` returned.
fn serve_any(ctx: &mut Ctx, rng: &mut Rng, counts: Counts, exit: Exit) -> Result<Served, Stop> {
    ctx.call(&Serve {
        memory: Memory {
            words: walker::identity_map(),
            bytes: Vec::new(),
        },
        cr3: PML4_ADDR,
        host_base: host_base(rng),
        counts,
        exit,
        reads: Vec::new(),
    })
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

fn print32bit(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    // A value with every byte significant, and the edges of a u32: 0, the largest, the sign bit.
    let mut values = [
        rng.range(0x0101_0101, 0xffff_ffff) as u32,
        0,
        u32::MAX,
        0x8000_0000 | rng.range(0, 0x1_0000) as u32,
    ];
    rng.shuffle(&mut values);
    for value in values {
        print32bit_of(ctx, &mut rng, value)?;
    }
    Ok(())
}

fn print32bit_of(ctx: &mut Ctx, rng: &mut Rng, value: u32) -> Result<(), Stop> {
    let exit = Exit::Out {
        port: PRINT32_PORT,
        data: value.to_le_bytes().to_vec(),
    };
    let (flow, seen) = serve(ctx, rng, Counts::default(), exit)?;
    let console = &seen.console;
    if *console != format!("{value}\n").into_bytes() {
        let what = format!(
            "print32bit({value}) printed {:?}, expected \"{value}\\n\": {}; the value is the OUT's 4 data bytes, little-endian, printed in decimal with a newline",
            String::from_utf8_lossy(console),
            number_format(console, value)
        );
        return Err(fail(LAB, "handle_hypercall", what).into());
    }
    let expected = [record("print32bit", vec![value.into()], None)];
    if seen.records != expected || seen.counts.io_out != 1 || flow != Flow::Continue {
        let what = format!(
            "print32bit({value}) gave records {:?}, io_out {}, {flow:?}; expected {expected:?}, 1, Continue: record each hypercall with host.record",
            seen.records, seen.counts.io_out
        );
        return Err(fail(LAB, "handle_hypercall", what).into());
    }
    Ok(())
}

fn num_exits(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    // Exits so far: a few hundred, and answers at the edges of a byte, of 16 bits and of the
    // sign bit of a u32 (the answer is 4 bytes).
    let mut priors = [rng.range(1, 550), 255, 0xffff, 0x7fff_ffff + rng.range(0, 0x1_0000)];
    rng.shuffle(&mut priors);
    for prior in priors {
        num_exits_after(ctx, &mut rng, prior)?;
    }
    unexpected_exits(ctx, &mut rng)
}

/// Exits that are no hypercall: each counted under its reason, then `Lab5Error::Unexpected`.
fn unexpected_exits(ctx: &mut Ctx, rng: &mut Rng) -> Result<(), Stop> {
    let addr = rng.range(0x20_0000, 0xf000_0000) & !3;
    let mut exits = [
        (
            Exit::Mmio {
                addr,
                len: 4,
                write: false,
            },
            format!("an MMIO read at {addr:#x}"),
        ),
        (
            Exit::Mmio {
                addr,
                len: 4,
                write: true,
            },
            format!("an MMIO write at {addr:#x}"),
        ),
        (Exit::Shutdown, "a triple fault (shutdown)".to_owned()),
        (Exit::Other, "an exit of another reason (IrqWindowOpen)".to_owned()),
    ];
    rng.shuffle(&mut exits);
    for (exit, what) in exits {
        let before = Counts {
            io_out: rng.range(0, 1_000),
            io_in: rng.range(0, 1_000),
            mmio: rng.range(0, 1_000),
            shutdown: rng.range(0, 3),
            other: rng.range(0, 1_000),
            ..Counts::default()
        };
        let mut expected = before;
        match exit {
            Exit::Mmio { .. } => expected.mmio += 1,
            Exit::Shutdown => expected.shutdown += 1,
            _ => expected.other += 1,
        }
        let served = serve_any(ctx, rng, before, exit)?;
        if let Ok(flow) = &served.flow {
            let what = format!(
                "{what} gave Ok({flow:?}), expected Err(Lab5Error::Unexpected(..)): an exit that is no hypercall ends the run with a diagnostic"
            );
            return Err(fail(LAB, "handle_hypercall", what).into());
        }
        if served.counts != expected {
            let what = format!(
                "after {what} the counts are {:?}, expected {:?} (from {:?}): count an exit that is no hypercall under its reason (mmio, shutdown, the rest in other) before you refuse it",
                served.counts, expected, before
            );
            return Err(fail(LAB, "handle_hypercall", what).into());
        }
    }
    Ok(())
}

fn num_exits_after(ctx: &mut Ctx, rng: &mut Rng, prior: u64) -> Result<(), Stop> {
    let io_in = rng.range(0, prior.min(50) + 1);
    let before = Counts {
        io_out: prior - io_in,
        io_in,
        ..Counts::default()
    };
    let expected = prior + 1;
    let exit = Exit::In {
        port: NUM_EXITS_PORT,
        size: 4,
    };
    let (_, seen) = serve(ctx, rng, before, exit)?;
    let data: [u8; 4] = seen.in_data.as_slice().try_into().map_err(|_| malformed("IN data"))?;
    let answered = u32::from_le_bytes(data);
    if u64::from(answered) != expected {
        let why = if u64::from(answered) + 1 == expected {
            "count the exit first; the answer includes this one (the guest relies on it: two calls around one print_str differ by 2)"
        } else if u64::from(answered) == expected & 0xff || u64::from(answered) == expected & 0xffff {
            "only the low bytes of the answer arrived: the IN is 4 bytes, fill all of them with the u32, little-endian"
        } else {
            "the answer is the number of exits so far, this one included, as a u32 in the IN's 4 data bytes, little-endian"
        };
        let what = format!("num_exits after {prior} exits answered {answered}, expected {expected}: {why}");
        return Err(fail(LAB, "handle_hypercall", what).into());
    }
    match seen.records.as_slice() {
        [Record { name, result, .. }] if name == "num_exits" && *result == Some(expected) => Ok(()),
        other => Err(fail(
            LAB,
            "handle_hypercall",
            format!("num_exits was recorded as {other:?}, expected one record with result {expected}"),
        )
        .into()),
    }
}

fn exit_report(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let counts = Counts {
        io_in: rng.range(1, 100_000),
        io_out: rng.range(1, 100_000),
        hlt: rng.range(0, 2),
        ..Counts::default()
    };
    let expected = format!("IO in: {}\nIO out: {}\n\0", counts.io_in, counts.io_out).into_bytes();
    let seen = ctx.call(&WriteExitReport {
        counts,
        read: (REPORT_ADDR, expected.len() as u64),
    })?;
    let addr = seen.returned.map_err(|err| fail(LAB, "write_exit_report", err))?;
    if addr != REPORT_ADDR {
        let what = format!("returned {addr:#x}, expected {REPORT_ADDR:#x}, where the report is");
        return Err(fail(LAB, "write_exit_report", what).into());
    }
    if seen.bytes != expected {
        let what = format!(
            "0x5000 holds {:?}, expected {:?} (with a NUL at the end: print_str reads up to it)",
            String::from_utf8_lossy(&seen.bytes),
            String::from_utf8_lossy(&expected)
        );
        return Err(fail(LAB, "write_exit_report", what).into());
    }
    Ok(())
}

/// Random page tables with two GVA-adjacent 4 KiB pages mapped to guest physical pages that
/// are not adjacent, and one more page: strings go there.
struct StringTables {
    cr3: u64,
    words: Vec<(u64, u64)>,
    /// The two adjacent pages: (GVA of the first, its guest physical page, the second's).
    pair: (u64, u64, u64),
    /// Another page: (GVA, guest physical).
    single: (u64, u64),
    /// An address the tables map outside guest memory, and where.
    outside: Option<(u64, u64)>,
    /// An address whose walk meets a clear P bit.
    hole: Option<u64>,
    /// The 1 GiB and 2 MiB pages that map guest physical 0, whose entries have PAT (bit 12)
    /// set: the level of the entry and the page's first address.
    large_at_zero: Vec<(Level, u64)>,
}

/// The guest physical page of each entry the tables use, and of each page they map in memory.
fn used_pages(tables: &RandomTables) -> Vec<u64> {
    let mut pages: Vec<u64> = tables.memory.iter().map(|&(addr, _)| addr & !0xfff).collect();
    pages.extend(tables.in_memory.iter().map(|&(_, gpa)| gpa));
    pages
}

fn string_tables(rng: &mut Rng) -> StringTables {
    loop {
        let tables = RandomTables::build(rng);
        let mut pages = tables.in_memory.clone();
        rng.shuffle(&mut pages);
        let [(first_gva, first_gpa), single] = pages[..] else {
            continue;
        };
        // The PT entry of the first page, from its recorded walk.
        let Some(pte) = tables.walks.iter().find_map(|walk| {
            let last = walk.steps.last()?;
            (last.level == Level::Pt && walk.gva & !0xfff == first_gva).then_some(last.entry_addr)
        }) else {
            continue;
        };
        // A free PT slot beside it: the page after, or the one before.
        let taken = |addr: u64| tables.memory.iter().any(|&(a, _)| a == addr);
        let (new_pte, pair_gva, new_is_second) = if pte & 0xfff != 0xff8 && !taken(pte + 8) {
            (pte + 8, first_gva, true)
        } else if pte & 0xfff != 0 && !taken(pte - 8) {
            (pte - 8, first_gva - 0x1000, false)
        } else {
            continue;
        };
        let used = used_pages(&tables);
        let new_gpa = loop {
            let page = rng.range(0x10, 0x1f0) * 0x1000;
            if !used.contains(&page) && page.abs_diff(first_gpa) > 0x1000 {
                break page;
            }
        };
        let pair = if new_is_second {
            (pair_gva, first_gpa, new_gpa)
        } else {
            (pair_gva, new_gpa, first_gpa)
        };
        let outside = tables.walks.iter().find_map(|w| match w.result {
            Ok(gpa) if gpa >= MEMORY_END => Some((w.gva, gpa)),
            _ => None,
        });
        let hole = tables
            .walks
            .iter()
            .find(|w| matches!(w.result, Err(grader_protocol::lab2::WalkFault::NotPresent(_))))
            .map(|w| w.gva);
        let mut words = tables.memory.clone();
        words.push((new_pte, new_gpa | PTE_PRESENT | PTE_RW | PTE_USER));
        return StringTables {
            cr3: tables.cr3,
            words,
            pair,
            single,
            outside,
            hole,
            large_at_zero: tables.large_at_zero.clone(),
        };
    }
}

fn show(bytes: &[u8], at_most: usize) -> String {
    String::from_utf8_lossy(bytes).chars().take(at_most).collect()
}

/// `read_guest_string` of each of `cases`, in memory with `bytes` written into `tables`.
fn read_strings(
    ctx: &mut Ctx,
    tables: &StringTables,
    bytes: Vec<(u64, Vec<u8>)>,
    cases: &[(u64, Option<Vec<u8>>, String)],
) -> Result<(), Stop> {
    let memory = Memory {
        words: tables.words.clone(),
        bytes,
    };
    let gvas = cases.iter().map(|(gva, _, _)| *gva).collect();
    let found = ctx.call(&ReadStrings {
        memory,
        cr3: tables.cr3,
        gvas,
    })?;
    if found.len() != cases.len() {
        return Err(malformed("a read for each address"));
    }
    for ((gva, expected, what), found) in cases.iter().zip(found) {
        judge_string(*gva, expected.as_deref(), what, found)?;
    }
    Ok(())
}

fn judge_string(gva: u64, expected: Option<&[u8]>, what: &str, found: StringRead) -> Result<(), String> {
    match (expected, found) {
        (Some(want), StringRead::Read(got)) if got == want => Ok(()),
        (Some(want), StringRead::Read(got)) => Err(fail(
            LAB,
            "read_guest_string",
            format!(
                "{what} at {gva:#x} read as {} bytes {:?}, expected {} bytes without the NUL{}",
                got.len(),
                show(&got, 40),
                want.len(),
                if got.len() < want.len() && want.len() > 100 {
                    ": a string may be up to MAX_STRING bytes long"
                } else {
                    ": read up to the NUL, across pages, translating the address of each page through the guest's page tables"
                }
            ),
        )),
        (Some(want), StringRead::BadAddress(err) | StringRead::OtherError(err)) => Err(fail(
            LAB,
            "read_guest_string",
            format!(
                "{what} at {gva:#x} gave Err({err}), expected its {} bytes{}",
                want.len(),
                if want.len() == MAX_STRING {
                    ": the limit is MAX_STRING bytes before the NUL, so a string of exactly that length is fine"
                } else {
                    ": translate the address through the guest's page tables (lab 2's translate), each 4 KiB page the string touches, then read guest physical memory there"
                }
            ),
        )),
        (None, StringRead::BadAddress(_)) => Ok(()),
        (None, other) => Err(fail(
            LAB,
            "read_guest_string",
            format!(
                "{what} ({gva:#x}) gave {}, expected Err(Lab5Error::BadAddress): a guest must not make the host read without end or outside its memory",
                match other {
                    StringRead::Read(bytes) => format!("Ok({:?})", show(&bytes, 20)),
                    StringRead::BadAddress(err) | StringRead::OtherError(err) => format!("Err({err})"),
                }
            ),
        )),
    }
}

fn guest_string(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let tables = string_tables(&mut rng);
    let (pair_gva, first_gpa, second_gpa) = tables.pair;
    let (single_gva, single_gpa) = tables.single;

    // A page the tables map far from its physical address: reading the GVA as a GPA shows.
    let text = rng.text_between(2, 40);
    let offset = rng.range(0, 0x1000 - text.len() as u64 - 1);
    let mut placed = vec![(single_gpa + offset, [text.as_slice(), &[0]].concat())];
    let remapped = (
        single_gva + offset,
        Some(text.clone()),
        format!(
            "a {}-byte string on a page the tables map elsewhere (CR3 {:#x}, guest physical {single_gpa:#x})",
            text.len(),
            tables.cr3
        ),
    );
    // Across the two pages, which lie apart in guest physical memory.
    let across = rng.text_between(2, 60);
    let before = rng.range(1, across.len() as u64);
    placed.push((first_gpa + 0x1000 - before, across[..before as usize].to_vec()));
    placed.push((second_gpa, [&across[before as usize..], &[0u8][..]].concat()));
    let mut cases = vec![(
        pair_gva + 0x1000 - before,
        Some(across.clone()),
        format!(
            "a {}-byte string across two pages the tables map to guest physical {first_gpa:#x} and {second_gpa:#x}, not adjacent",
            across.len()
        ),
    )];
    if let Some((gva, gpa)) = tables.outside {
        cases.push((
            gva,
            None,
            format!("an address the tables map outside guest memory (guest physical {gpa:#x})"),
        ));
    }
    if let Some(gva) = tables.hole {
        cases.push((gva, None, "an address whose walk meets a clear P bit".to_owned()));
    }
    // Through the large pages at guest physical 0, on a physical page with bit 12 clear (below
    // the tables): a walk that keeps their PAT bit reads the page after.
    for (i, &(level, page_gva)) in tables.large_at_zero.iter().enumerate() {
        let text = rng.text_between(2, 40);
        // Pages 0x2000..0x6000 for the first, 0x8000..0xc000 for the second: apart.
        let page = (1 + 3 * i as u64 + rng.range(0, 3)) * 0x2000;
        let gpa = page + rng.range(0, 0x1000 - text.len() as u64 - 1);
        placed.push((gpa, [text.as_slice(), &[0]].concat()));
        let size = if level == Level::Pdpt { "1 GiB" } else { "2 MiB" };
        cases.push((
            page_gva + gpa,
            Some(text.clone()),
            format!(
                "a {}-byte string on the {size} page that maps guest physical 0, whose entry has PAT (bit 12, not an address bit in a large page's entry) set, at guest physical {gpa:#x}",
                text.len()
            ),
        ));
    }
    rng.shuffle(&mut cases);
    // The remapped page first: its message says what a walk-less read does.
    cases.insert(0, remapped);
    read_strings(ctx, &tables, placed, &cases)?;

    // Exactly MAX_STRING bytes, then more than MAX_STRING before the NUL, across the two pages.
    let longest: Vec<u8> = (0..MAX_STRING).map(|i| b'a' + (i % 26) as u8).collect();
    let start = rng.range(1, 0x1000);
    let what = format!("a string of exactly MAX_STRING = {MAX_STRING} bytes, across the two pages");
    let placed = on_pair(&tables, start, &[longest.as_slice(), &[0]].concat());
    read_strings(ctx, &tables, placed, &[(pair_gva + start, Some(longest), what)])?;
    let too_long = MAX_STRING + rng.range(1, 64) as usize;
    let start = rng.range(0, 0x2000 - too_long as u64 - 1);
    let what = format!("a string with no NUL within {MAX_STRING} bytes (its NUL is {too_long} bytes on)");
    let placed = on_pair(&tables, start, &[vec![b'x'; too_long], vec![0]].concat());
    read_strings(ctx, &tables, placed, &[(pair_gva + start, None, what)])
}

/// `bytes` at `offset` from the start of the two adjacent pages, split between their guest
/// physical pages.
fn on_pair(tables: &StringTables, offset: u64, bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let (_, first_gpa, second_gpa) = tables.pair;
    let in_first = (0x1000u64.saturating_sub(offset) as usize).min(bytes.len());
    let (head, tail) = bytes.split_at(in_first);
    let mut placed = Vec::new();
    if !head.is_empty() {
        placed.push((first_gpa + offset, head.to_vec()));
    }
    if !tail.is_empty() {
        placed.push((second_gpa + offset.saturating_sub(0x1000), tail.to_vec()));
    }
    placed
}

fn gva_to_hva(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let base = host_base(&mut rng);
    let inside = rng.range(0, MEMORY_END);
    let mut cases = vec![
        (0x400, Some(base + 0x400)),
        (inside, Some(base + inside)),
        (0x4000_0000 + rng.range(0, 0x4000_0000), None),
    ];
    rng.shuffle(&mut cases);
    expect_hvas(ctx, walker::identity_map(), PML4_ADDR, base, &cases, &[])?;
    // Tables that are not an identity map: a GVA taken for a GPA shows. Every recorded walk,
    // and the pages mapped inside memory.
    let tables = RandomTables::build(&mut rng);
    let mut cases: Vec<(u64, Option<u64>)> = tables
        .walks
        .iter()
        .map(|walk| {
            let hva = walk.result.ok().filter(|gpa| *gpa < MEMORY_END).map(|gpa| base + gpa);
            (walk.gva, hva)
        })
        .collect();
    cases.extend(tables.in_memory.iter().map(|&(gva, gpa)| {
        let offset = rng.range(0, 0x1000);
        (gva | offset, Some(base + gpa + offset))
    }));
    rng.shuffle(&mut cases);
    expect_hvas(ctx, tables.memory, tables.cr3, base, &cases, &tables.walks)
}

/// The last entry of the recorded walk of `gva`, if `walks` has it.
fn leaf_of(walks: &[Walk], gva: u64) -> Option<&WalkStep> {
    walks.iter().find(|walk| walk.gva == gva)?.steps.last()
}

fn expect_hvas(
    ctx: &mut Ctx,
    words: Vec<(u64, u64)>,
    cr3: u64,
    base: u64,
    cases: &[(u64, Option<u64>)],
    walks: &[Walk],
) -> Result<(), Stop> {
    let found = ctx.call(&GvaToHva {
        memory: Memory {
            words,
            bytes: Vec::new(),
        },
        cr3,
        host_base: base,
        gvas: cases.iter().map(|&(gva, _)| gva).collect(),
    })?;
    if found.len() != cases.len() {
        return Err(malformed("an answer for each address"));
    }
    for (&(gva, expected), found) in cases.iter().zip(found) {
        expect_hva(cr3, base, gva, expected, found, leaf_of(walks, gva))?;
    }
    Ok(())
}

/// Judges one answer of gva_to_hva; `leaf` is the entry that maps `gva`'s page, when the
/// judge's tables recorded it.
fn expect_hva(
    cr3: u64,
    base: u64,
    gva: u64,
    expected: Option<u64>,
    found: Option<u64>,
    leaf: Option<&WalkStep>,
) -> Result<(), String> {
    if found == expected {
        return Ok(());
    }
    let large_pat = leaf
        .filter(|leaf| leaf.level != Level::Pt && leaf.entry & PTE_PS != 0 && leaf.entry & walker::PTE_PAT_LARGE != 0);
    let cause = match (found, large_pat) {
        (Some(hva), Some(leaf)) if expected.is_some_and(|e| hva == e + walker::PTE_PAT_LARGE) => format!(
            ": that is {:#x} too far: the PAT bit (bit 12) of {}[{}] = {:#x} was kept in the guest physical address; in a {} page entry bit 12 is PAT, a caching attribute, and the page's address starts at bit {}",
            walker::PTE_PAT_LARGE,
            leaf.level,
            leaf.index,
            leaf.entry,
            if leaf.level == Level::Pd { "2 MiB" } else { "1 GiB" },
            leaf.level.shift()
        ),
        (Some(hva), _) if Some(hva) == expected.map(|e| e - base) => {
            ": that is the guest physical address itself".to_owned()
        }
        (Some(hva), _) if hva == base.wrapping_add(gva) => {
            ": that is host_base plus the GVA itself; these page tables do not map it to the same physical address"
                .to_owned()
        }
        (Some(_), _) if expected.is_none() => {
            ": this address does not translate, or translates outside guest memory".to_owned()
        }
        _ => String::new(),
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

fn gva_to_hva_hypercall(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let base = host_base(&mut rng);
    let mut cases = [
        (rng.range(0, MEMORY_END), true),
        (0x4000_0000 + rng.range(0, 0x4000_0000), false),
    ];
    rng.shuffle(&mut cases);
    for (gva, mapped) in cases {
        let slot = rng.range(0x6000 / 8, 0x1f_0000 / 8) * 8;
        let mut words = walker::identity_map();
        words.push((slot, gva));
        let seen = ctx.call(&Serve {
            memory: Memory {
                words,
                bytes: Vec::new(),
            },
            cr3: PML4_ADDR,
            host_base: base,
            counts: Counts::default(),
            exit: Exit::Out {
                port: GVA_TO_HVA_PORT,
                data: (slot as u32).to_le_bytes().to_vec(),
            },
            reads: vec![(slot, 8)],
        })?;
        seen.flow.map_err(|err| {
            fail(
                LAB,
                "handle_hypercall",
                format!("gva_to_hva with its slot at {slot:#x}: {err}"),
            )
        })?;
        let expected = if mapped { base + gva } else { 0 };
        let found = match seen.reads.first() {
            Some(Some(bytes)) if bytes.len() == 8 => u64::from_le_bytes(bytes.as_slice().try_into().expect("8 bytes")),
            _ => return Err(malformed("the slot")),
        };
        if found != expected {
            let what = format!(
                "gva_to_hva with its slot at {slot:#x} (holding GVA {gva:#x}; host_base {base:#x}) left {found:#x} in the slot, expected {expected:#x}: {}",
                slot_cause(found, expected, gva, slot, base)
            );
            return Err(fail(LAB, "handle_hypercall", what).into());
        }
        let expected_output: &[u8] = if mapped { b"" } else { b"Invalid GVA\n" };
        if seen.console != expected_output {
            let what = format!(
                "gva_to_hva of {} GVA printed {:?}, expected {:?}: only an address that does not translate prints \"Invalid GVA\"",
                if mapped { "a mapped" } else { "an unmapped" },
                String::from_utf8_lossy(&seen.console),
                String::from_utf8_lossy(expected_output)
            );
            return Err(fail(LAB, "handle_hypercall", what).into());
        }
        let expected_record = record("gva_to_hva", vec![gva], Some(expected));
        if seen.records != [expected_record.clone()] {
            let what = format!(
                "gva_to_hva was recorded as {:x?}, expected [{expected_record:x?}]: record the GVA read from the slot and the HVA written back",
                seen.records
            );
            return Err(fail(LAB, "handle_hypercall", what).into());
        }
    }
    Ok(())
}

fn gva_to_hva_outside_memory(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut words = walker::identity_map();
    // PD[1] maps the 2 MiB page just past the end of the guest's 2 MiB of memory.
    words.push((PD_ADDR + 8, MEMORY_END | PTE_PRESENT | PTE_RW | PTE_USER | PTE_PS));
    let base = host_base(&mut rng);
    let mut cases = [
        (MEMORY_END, None),
        (MEMORY_END + rng.range(0, MEMORY_END), None),
        (MEMORY_END - 8, Some(base + MEMORY_END - 8)),
    ];
    rng.shuffle(&mut cases);
    let found = ctx.call(&GvaToHva {
        memory: Memory {
            words,
            bytes: Vec::new(),
        },
        cr3: PML4_ADDR,
        host_base: base,
        gvas: cases.iter().map(|&(gva, _)| gva).collect(),
    })?;
    if found.len() != cases.len() {
        return Err(malformed("an answer for each address"));
    }
    for (&(gva, expected), found) in cases.iter().zip(found) {
        if found != expected {
            let what = match expected {
                None => format!(
                    "gva_to_hva({gva:#x}) gave {found:x?}, expected None: a page table entry maps guest physical {gva:#x}, past the end of guest memory (2 MiB); the host address would point outside the VM's memory, so answer None"
                ),
                Some(_) => format!(
                    "gva_to_hva({gva:#x}) gave {found:x?}, expected {expected:x?}: guest physical {gva:#x} is the last word of guest memory, inside it"
                ),
            };
            return Err(fail(LAB, "gva_to_hva", what).into());
        }
    }
    // Random tables, whose pages mostly lie past guest memory, and two pages inside it.
    let tables = RandomTables::build(&mut rng);
    let mut cases: Vec<(u64, Option<u64>, Option<u64>)> = tables
        .walks
        .iter()
        .filter_map(|walk| walk.result.ok().map(|gpa| (walk.gva, gpa)))
        .map(|(gva, gpa)| (gva, Some(gpa), (gpa < MEMORY_END).then(|| base + gpa)))
        .collect();
    cases.extend(tables.in_memory.iter().map(|&(gva, gpa)| {
        let offset = rng.range(0, 0x1000);
        (gva | offset, Some(gpa + offset), Some(base + gpa + offset))
    }));
    rng.shuffle(&mut cases);
    let found = ctx.call(&GvaToHva {
        memory: Memory {
            words: tables.memory,
            bytes: Vec::new(),
        },
        cr3: tables.cr3,
        host_base: base,
        gvas: cases.iter().map(|&(gva, _, _)| gva).collect(),
    })?;
    if found.len() != cases.len() {
        return Err(malformed("an answer for each address"));
    }
    for (&(gva, gpa, expected), found) in cases.iter().zip(found) {
        match (gpa, expected) {
            (Some(gpa), None) if found.is_some() => {
                let what = format!(
                    "gva_to_hva({gva:#x}) with CR3 {:#x} gave {found:x?}, expected None: the tables map it to guest physical {gpa:#x}, past the end of guest memory (2 MiB); the host address would point outside the VM's memory, so answer None",
                    tables.cr3
                );
                return Err(fail(LAB, "gva_to_hva", what).into());
            }
            _ => expect_hva(tables.cr3, base, gva, expected, found, leaf_of(&tables.walks, gva))?,
        }
    }
    Ok(())
}

/// Runs a guest made for this run with `mix` through the student's VMM. A stub reached or a
/// panic stops the check here; any other failure is left to the judge of the output.
fn run_made_guest(ctx: &mut Ctx, mix: HypercallMix) -> Result<(HypercallGuest, HypercallRun), Stop> {
    let guest = guestgen::hypercalls(&mut ctx.rng(), mix);
    let run = ctx.call(&RunHypercallGuest {
        image: guest.image.clone(),
        timeout_ms: super::GUEST_TIMEOUT.as_millis() as u64,
    })?;
    match run.status {
        6 => Err(super::stub_reached(&run.message)),
        7 => Err(Stop::Failed(run.message.clone())),
        _ => Ok((guest, run)),
    }
}

/// A guest made for this run, in words.
const MADE: &str = "a hypercall guest made for this run";

/// The first part of the guest's output that the run's output departs from: its index, and
/// what the run printed there.
fn departure(guest: &HypercallGuest, output: &[u8], base: u64) -> Option<(usize, Vec<u8>)> {
    let mut at = 0;
    for (i, part) in guest.parts.iter().enumerate() {
        let expected = part.bytes(base);
        let rest = &output[at.min(output.len())..];
        if rest.starts_with(&expected) {
            at += expected.len();
            continue;
        }
        let shown = rest.len().min(expected.len() + 24);
        return Some((i, rest[..shown].to_vec()));
    }
    (at != output.len()).then(|| (guest.parts.len(), output[at..].to_vec()))
}

/// An earlier reading of a departure at part `index`: a part before it that printed only the
/// first bytes of its output, every later part being right to the end of the output. Its
/// missing bytes happened to begin what follows (a string that lost its last byte `4` before
/// `print32bit(4294967295)`), so `departure` saw them as printed. The part and what it printed.
fn truncated_before(guest: &HypercallGuest, output: &[u8], base: u64, index: usize) -> Option<(usize, Vec<u8>)> {
    let parts: Vec<Vec<u8>> = guest.parts.iter().map(|part| part.bytes(base)).collect();
    let starts: Vec<usize> = parts
        .iter()
        .scan(0, |at, part| {
            let start = *at;
            *at += part.len();
            Some(start)
        })
        .collect();
    (0..index.min(parts.len())).rev().find_map(|j| {
        let tail: Vec<u8> = parts[j + 1..].concat();
        let printed = output.len().checked_sub(tail.len())?.checked_sub(starts[j])?;
        (printed < parts[j].len() && output.ends_with(&tail)).then(|| (j, parts[j][..printed].to_vec()))
    })
}

/// Judges what a run of `guest` printed, the host base being `base`: `Ok` when it is the
/// guest's whole output, else the message (its cause handle_hypercall, which prints, or the
/// loop that hands it the exits: the output cannot tell which), which names the first call whose output differs
/// and, for the calls `explain` knows, why. `ended` is the run's failure, if it failed.
pub fn judge_output(guest: &HypercallGuest, output: &[u8], base: u64, ended: &str) -> Result<(), String> {
    let Some((first_seen, seen)) = departure(guest, output, base) else {
        return Ok(());
    };
    let ended = if ended.is_empty() {
        String::new()
    } else {
        format!("; the run ended: {ended}")
    };
    // A part that stopped short, read first: the other reading is named after it.
    let (index, found, other_reading) = match truncated_before(guest, output, base, first_seen) {
        Some((index, found)) => {
            let other = match guest.parts.get(first_seen) {
                Some(part) => format!(
                    " (read otherwise, its call {} printed {:?}, expected {:?}: the output alone cannot tell which; an output cut short is the likelier)",
                    first_seen + 1,
                    show(&seen, 80),
                    show(&part.bytes(base), 80)
                ),
                None => String::new(),
            };
            (index, found, other)
        }
        None => (first_seen, seen, String::new()),
    };
    let Some(part) = guest.parts.get(index) else {
        return Err(fail(
            LAB,
            "handle_hypercall/run_hypercalls",
            format!(
                "{MADE} printed {:?} after all of its output{ended}: print each hypercall's output once",
                show(&found, 60)
            ),
        ));
    };
    let expected = part.bytes(base);
    let why = explain(guest, index, &found, base);
    Err(fail(
        LAB,
        "handle_hypercall/run_hypercalls",
        format!(
            "{MADE} printed {:?} for its call {} of {}, {}, expected {:?}{why}{ended} (its output up to there was right){other_reading}",
            show(&found, 80),
            index + 1,
            guest.parts.len(),
            part.what,
            show(&expected, 80),
        ),
    ))
}

/// The numbers at the start of `found`, one a line.
fn numbers(found: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(found)
        .lines()
        .map_while(|line| line.trim().parse().ok())
        .collect()
}

/// Why the output of part `index` is `found` instead of `expected`, for the calls whose mistakes
/// have a usual cause.
fn explain(guest: &HypercallGuest, index: usize, found: &[u8], base: u64) -> String {
    let part = &guest.parts[index];
    let found_numbers = numbers(found);
    match (&part.kind, &part.expected) {
        (CallKind::NumExits | CallKind::LastNumExits, Expected::Bytes(bytes)) => {
            let want = numbers(bytes).first().copied().unwrap_or_default();
            match found_numbers.first() {
                Some(&n) if n + 1 == want => {
                    ": one less: count the exit first; the answer includes this one".to_owned()
                }
                Some(_) => {
                    ": num_exits answers the exits so far, every IN and OUT of the guest, this one included".to_owned()
                }
                None => String::new(),
            }
        }
        (CallKind::AroundPrintStr, Expected::Bytes(bytes)) => {
            let want = numbers(bytes);
            match found_numbers[..] {
                [a, b, ..] if b != a + 2 => format!(
                    ": the answers are {} apart, expected 2: print_str must cost exactly one exit, and each exit is counted once",
                    b as i64 - a as i64
                ),
                [a, ..] if want.first() == Some(&(a + 1)) => {
                    ": one less: count the exit first; the answer includes this one".to_owned()
                }
                _ => String::new(),
            }
        }
        (CallKind::Report | CallKind::ReportInMemory, _) => format!(
            ": X and Y count the IN and OUT exits so far, this one included; write \"IO in: X\\nIO out: Y\\n\" and a NUL at {REPORT_ADDR:#x}, answer that address{}",
            if part.kind == CallKind::ReportInMemory {
                " (the guest read this from guest memory itself)"
            } else {
                ", and print_str prints from it"
            }
        ),
        (CallKind::PrintStr, _) => match part.string_at.and_then(|(gpa, gva)| read_with_pat(guest, gpa, gva)) {
            // `found` is a window of the output: it agrees with the text read 0x1000 too far.
            Some(wrong) if !found.is_empty() && (wrong.starts_with(found) || found.starts_with(&wrong)) => format!(
                ": that is the string at guest physical {:#x}: the PAT bit (bit 12) of the guest's PD[{}] = {:#x} was kept in the guest physical address; in a 2 MiB page entry bit 12 is PAT, a caching attribute, and the page's address starts at bit 21",
                part.string_at.map_or(0, |(gpa, _)| gpa | guestgen::ALIAS_PAT),
                guest.alias,
                guest.alias_entry
            ),
            _ => format!(
                ": print the bytes up to the NUL, read through the guest's page tables (the guest maps its first 2 MiB again at {:#x})",
                guest.alias << 21
            ),
        },
        (CallKind::GvaToHva, Expected::Hva(gpa)) => {
            let halves: Vec<u64> = found_numbers.iter().take(2).copied().collect();
            let hva = match halves[..] {
                [low, high] => Some(low | (high << 32)),
                _ => None,
            };
            match (gpa, hva) {
                (Some(_), _) if found.starts_with(b"Invalid GVA") => format!(
                    ": the guest's page tables map this address (the guest maps its first 2 MiB again at {:#x}, PD[{}] beside the lab's identity map): translate it through them; only an address that does not translate is invalid",
                    guest.alias << 21,
                    guest.alias
                ),
                (None, _) => {
                    ": an address that does not translate prints \"Invalid GVA\" and leaves 0 in the slot".to_owned()
                }
                (Some(gpa), Some(hva)) if hva == *gpa => {
                    ": that is the guest physical address itself: add host_base".to_owned()
                }
                (Some(gpa), Some(hva)) if hva == base.wrapping_add(*gpa) + guestgen::ALIAS_PAT => format!(
                    ": that is {:#x} too far: the PAT bit (bit 12) of the guest's PD[{}] = {:#x} was kept in the guest physical address; in a 2 MiB page entry bit 12 is PAT, a caching attribute, and the page's address starts at bit 21",
                    guestgen::ALIAS_PAT,
                    guest.alias,
                    guest.alias_entry
                ),
                (Some(gpa), Some(hva)) if hva & 0xffff_ffff == base.wrapping_add(*gpa) & 0xffff_ffff => {
                    ": only the low 4 bytes are right: the slot holds 8 bytes, the whole HVA, little-endian".to_owned()
                }
                (Some(gpa), Some(_)) => format!(
                    ": the slot must hold host_base ({base:#x}) + {gpa:#x}, the guest physical address the guest's page tables give (the guest maps its first 2 MiB again at {:#x})",
                    guest.alias << 21
                ),
                _ => String::new(),
            }
        }
        _ => String::new(),
    }
}

/// What a print_str of the string at guest physical `gpa`, passed as `gva` through the guest's
/// alias, prints when the walk keeps the alias entry's PAT bit: the image's bytes from `gpa |
/// 0x1000` to their NUL (the image fills that page with text); `None` when the GVA is not the
/// alias's or bit 12 is set already.
fn read_with_pat(guest: &HypercallGuest, gpa: u64, gva: u64) -> Option<Vec<u8>> {
    let wrong = gpa | guestgen::ALIAS_PAT;
    if gva >> 21 != guest.alias || wrong == gpa {
        return None;
    }
    let rest = guest.image.get(wrong as usize..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    Some(rest[..nul].to_vec())
}

/// The run's exits against the guest's, once its output (which the answers of num_exits and
/// the report are part of) is right.
fn judge_exits(guest: &HypercallGuest, counts: &Counts) -> Result<(), String> {
    let (total, io) = (counts.total(), (counts.io_in, counts.io_out, counts.hlt));
    if total != guest.exits || io != (guest.io_in, guest.io_out, 1) {
        return Err(fail(
            LAB,
            "run_hypercalls",
            format!(
                "{MADE} made {total} exits (IN {}, OUT {}, HLT {}), expected {} (IN {}, OUT {}, HLT 1): one per hypercall, and the HLT",
                counts.io_in, counts.io_out, counts.hlt, guest.exits, guest.io_in, guest.io_out
            ),
        ));
    }
    Ok(())
}

/// Runs a made guest and judges its output, then the failure of a run whose output was right.
fn judged_run(ctx: &mut Ctx, mix: HypercallMix) -> Result<(HypercallGuest, HypercallRun), Stop> {
    let (guest, run) = run_made_guest(ctx, mix)?;
    let base = run.memory_host_base.unwrap_or_default();
    let expected = guest.output(base);
    if run.status != 0 && expected.starts_with(&run.output) {
        // It stopped early with all it printed right: the failure says why.
        let what = format!(
            "{MADE}: {} (it had printed {} of the {} bytes of the guest's output, all right)",
            run.message,
            run.output.len(),
            expected.len()
        );
        return Err(fail(LAB, "run_hypercalls", what).into());
    }
    judge_output(&guest, &run.output, base, &run.message)?;
    if run.status != 0 {
        return Err(fail(LAB, "run_hypercalls", format!("{MADE}: {}", run.message)).into());
    }
    Ok((guest, run))
}

/// How many printing calls a guest makes besides the others.
const PRINTS: (u64, u64) = (3, 9);

/// A guest with every kind of hypercall, `prints` of them printing ones.
pub(super) fn every_hypercall(ctx: &mut Ctx, prints: (u64, u64)) -> Result<(), Stop> {
    let mix = HypercallMix {
        prints,
        exit_counts: true,
        report: true,
        translations: true,
    };
    let (guest, run) = judged_run(ctx, mix)?;
    judge_exits(&guest, &run.counts)?;
    Ok(())
}

fn hypercall_guest(ctx: &mut Ctx) -> Result<(), Stop> {
    every_hypercall(ctx, PRINTS)
}

fn one_exit(ctx: &mut Ctx) -> Result<(), Stop> {
    let mix = HypercallMix {
        prints: PRINTS,
        exit_counts: true,
        report: false,
        translations: false,
    };
    let (guest, run) = judged_run(ctx, mix)?;
    judge_exits(&guest, &run.counts)?;
    Ok(())
}

fn gva_to_hva_live(ctx: &mut Ctx) -> Result<(), Stop> {
    let mix = HypercallMix {
        prints: PRINTS,
        exit_counts: false,
        report: false,
        translations: true,
    };
    judged_run(ctx, mix)?;
    Ok(())
}

/// `kvm-hello --guest GUEST --lab hypercalls --json`, `GUEST` made for this run with every kind
/// of hypercall: the JSON report's output must be the guest's (judged as in the guest checks,
/// with the report's `memory_host_base`), its exits the guest's, its gva_to_hva records the
/// HVAs the guest printed, its results the guest's 42s.
fn lab_hypercalls_program(ctx: &mut Ctx) -> Result<(), Stop> {
    let mix = HypercallMix {
        prints: PRINTS,
        exit_counts: true,
        report: true,
        translations: true,
    };
    let guest = guestgen::hypercalls(&mut ctx.rng(), mix);
    let args: Vec<String> = ["--lab", "hypercalls", "--json"].map(String::from).to_vec();
    let shown = format!("kvm-hello --guest GUEST {}", args.join(" "));
    let (report, run) = super::vmm_report(ctx, guest.image.clone(), args, LAB)?;
    let stderr = String::from_utf8_lossy(&run.stderr).trim_end().to_owned();
    let program_fail = |what: String| -> Stop {
        Stop::Failed(format!(
            "{shown}: {what} (its stderr: {stderr:?}) (book: {})",
            super::chapter(LAB)
        ))
    };
    let base = report["memory_host_base"].as_u64().unwrap_or_default();
    let output = report["output"].as_str().unwrap_or_default();
    let ended = report["error"]["message"].as_str().unwrap_or_default();
    judge_output(&guest, output.as_bytes(), base, ended)?;
    let expected = [
        ("/lab", serde_json::Value::from("hypercalls")),
        ("/exits/total", guest.exits.into()),
        ("/exits/io_in", guest.io_in.into()),
        ("/exits/io_out", guest.io_out.into()),
        ("/rax", 42.into()),
        ("/memory_0x400", 42.into()),
        ("/ok", true.into()),
        ("/status", 0.into()),
    ];
    for (pointer, value) in expected {
        let found = report.pointer(pointer).cloned().unwrap_or_default();
        if found != value {
            return Err(program_fail(format!(
                "the JSON report's {pointer} is {found}, expected {value} (the guest's output, which the report shows right, makes it so)"
            )));
        }
    }
    // The records count where the guest's output confirms them: the HVAs it printed.
    let printed: Vec<u64> = guest
        .parts
        .iter()
        .filter_map(|part| match part.expected {
            Expected::Hva(gpa) => Some(gpa.map_or(0, |gpa| base.wrapping_add(gpa))),
            _ => None,
        })
        .collect();
    let recorded: Vec<Option<u64>> = report["hypercalls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter(|call| call["name"] == "gva_to_hva")
                .map(|call| call["hva"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    if recorded != printed.iter().copied().map(Some).collect::<Vec<_>>() {
        return Err(program_fail(format!(
            "the JSON report's gva_to_hva records have hva {recorded:x?}, expected {printed:x?}, what the guest found in its slots: record the HVA written back (0 when the address does not translate)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestgen::Printed;

    fn part(kind: CallKind, what: &str, bytes: &[u8]) -> Printed {
        Printed {
            kind,
            what: what.to_owned(),
            expected: Expected::Bytes(bytes.to_vec()),
            string_at: None,
        }
    }

    fn guest(parts: Vec<Printed>) -> HypercallGuest {
        HypercallGuest {
            image: Vec::new(),
            parts,
            exits: 0,
            io_in: 0,
            io_out: 0,
            alias: 1,
            alias_entry: 0,
        }
    }

    #[test]
    fn a_string_that_lost_its_last_byte_before_a_number_that_begins_with_it_is_named_first() {
        let guest = guest(vec![
            part(CallKind::PrintStr, "print_str of a 4-byte string", b"ab84"),
            part(CallKind::Print32, "print32bit(4294967295)", b"4294967295\n"),
            part(CallKind::Print8, "print8bit('x')", b"x"),
        ]);
        // "ab8" then the number and the byte, right to the end.
        let message = judge_output(&guest, b"ab84294967295\nx", 0, "").unwrap_err();
        assert!(
            message.contains("printed \"ab8\" for its call 1 of 3, print_str of a 4-byte string, expected \"ab84\""),
            "{message}"
        );
        assert!(message.contains("(read otherwise, its call 2 printed"), "{message}");
        // A number printed wrong with the rest right is the number's.
        let message = judge_output(&guest, b"ab84294967296\nx", 0, "").unwrap_err();
        assert!(message.contains("for its call 2 of 3, print32bit"), "{message}");
        assert!(!message.contains("read otherwise"), "{message}");
        assert_eq!(judge_output(&guest, b"ab844294967295\nx", 0, ""), Ok(()));
    }
}
