//! Lab 3: register values per mode. The probe calls the lab's functions on the judge's inputs
//! (a random incoming state and CR3, a random memory size) and reports what they returned; the
//! judge holds each field against the documented values of `facts::registers` (data, not a
//! second implementation) or against the input it sent (what a mode must keep). Two checks judge
//! an effect as well: a guest made for the run (random text, values and addresses, page tables
//! at a random CR3) runs with the lab's registers, and what it printed, pushed and wrote shows
//! whether the CPU was in the mode, with the stack and flags, the registers say.

use grader_protocol::lab3::{
    FlatSegments, GeneralRegisters, Mode as WireMode, RunEnd, RunWithRegisters, SpecialCall, SpecialRegisters,
};
use kit_common::{CONSOLE_PORT, GUEST_MEMORY_SIZE, Mode};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

use super::{Group, expect_field, fail};
use crate::facts::registers::{
    self as documented, CODE_32, CODE_64, CR0_PAGED, CR4_LONG, CR4_PAGED32, DATA, EFER_LONG, EFER_PAGED32, Segment,
};
use crate::facts::{CR0_CD, CR0_ET, CR0_MP, CR0_NE, CR0_NW, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use crate::rng::Rng;
use crate::{Check, Ctx, HostNeed, Part, Stop, describe};

const LAB: u8 = 3;
/// Lab 3's checks need no other lab, and most no KVM.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
/// The checks that run a guest with the lab's registers (on the probe's own VM: no other lab).
const RUNS: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: true,
};
const SPECIAL: &str = "special_registers";
const GENERAL: &str = "general_registers";
const SEGMENT: &str = "flat_segment";
/// The checks of lab 3.
pub const CHECKS: &[Check] = &[
    PURE.check(
        "lab3_flat_segment",
        "flat_segment: 4 GiB code and data segments",
        2,
        flat_segments,
    ),
    PURE.check(
        "lab3_long_mode_control_registers",
        "long mode: CR0, CR3, CR4, EFER",
        3,
        long_mode_control_registers,
    ),
    PURE.check(
        "lab3_long_mode_code_segment",
        "long mode: a 64-bit code segment",
        2,
        long_mode_code_segment,
    ),
    PURE.check(
        "lab3_data_segments",
        "DS, ES, FS, GS, SS in every protected mode",
        2,
        data_segments,
    ),
    PURE.check(
        "lab3_protected_mode",
        "protected mode: PE and 32-bit segments only",
        2,
        protected_mode,
    ),
    PURE.check("lab3_paged32_mode", "paged32: PG, CR4.PSE, no EFER", 2, paged32_mode),
    PURE.check(
        "lab3_real_mode",
        "real mode: CS at 0, nothing else changed",
        2,
        real_mode,
    ),
    PURE.check(
        "lab3_general_registers",
        "RIP, RSP, RFLAGS and the rest, per mode",
        2,
        general_registers,
    ),
    RUNS.check(
        "lab3_guest_runs_in_each_mode",
        "a guest runs with these registers: long, protected, real",
        2,
        guest_runs_in_each_mode,
    ),
    Check {
        host: HostNeed::Paged32,
        ..RUNS.check(
            "lab3_guest_runs_in_paged32",
            "a guest runs with these registers: paged32",
            1,
            guest_runs_in_paged32,
        )
    },
];

fn wire(mode: Mode) -> WireMode {
    match mode {
        Mode::Real => WireMode::Real,
        Mode::Protected => WireMode::Protected,
        Mode::Paged32 => WireMode::Paged32,
        Mode::Long => WireMode::Long,
    }
}

/// A state as KVM_GET_SREGS might give it, with random values where a VMM must keep what it got
/// (descriptor tables, task and LDT registers, APIC base, CR2, CR8, CR0's cache bits).
fn reset_state(rng: &mut Rng) -> kvm_sregs {
    let mut cr0 = CR0_ET;
    for bit in [CR0_CD, CR0_NW, CR0_NE, CR0_MP] {
        if rng.chance(50) {
            cr0 |= bit;
        }
    }
    let table = |rng: &mut Rng| kvm_dtable {
        base: rng.range(0, 0x10_0000),
        limit: rng.range(0, 0x1_0000) as u16,
        ..Default::default()
    };
    let mut s = kvm_sregs {
        cr0,
        cr2: rng.next_u64() & 0xffff_ffff_f000,
        cr8: rng.range(0, 16),
        apic_base: 0xfee0_0000 | rng.range(0, 2) << 11 | 1 << 8,
        gdt: table(rng),
        idt: table(rng),
        ..Default::default()
    };
    for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        *seg = kvm_segment {
            limit: 0xffff,
            type_: 3,
            present: 1,
            s: 1,
            ..Default::default()
        };
    }
    s.cs = kvm_segment {
        selector: 0xf000,
        base: 0xffff_0000,
        limit: 0xffff,
        type_: 11,
        present: 1,
        s: 1,
        ..Default::default()
    };
    s.tr = kvm_segment {
        selector: rng.range(0, 0x100) as u16 & !7,
        base: rng.range(0, 0x10_0000),
        limit: 0xffff,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    s.ldt = kvm_segment {
        selector: rng.range(0, 0x100) as u16 & !7,
        base: rng.range(0, 0x10_0000),
        limit: 0xffff,
        type_: 2,
        present: 1,
        ..Default::default()
    };
    s
}

fn cr0_why(found: u64, expected: u64, mode: Mode) -> String {
    let missing = expected & !found;
    if missing & CR0_PE != 0 {
        "without PE the CPU stays in real mode".into()
    } else if missing & CR0_PG != 0 && mode == Mode::Long {
        "without PG paging is off, and long mode is only active with paging".into()
    } else if missing & CR0_PG != 0 {
        "without PG paging is off: the guest still greets (its addresses are identity-mapped), but it runs in \
         unpaged protected mode and CR3's page directory is never used"
            .into()
    } else if found & CR0_PG != 0 && expected & CR0_PG == 0 {
        "PG turns paging on, but this mode has no page tables".into()
    } else if mode == Mode::Protected {
        format!(
            "protected mode keeps the CR0 it is given ({}) and only adds PE: bits {} were lost or added",
            describe::cr0(expected & !CR0_PE),
            describe::cr0(found ^ expected)
        )
    } else {
        "kvm-hello-world sets exactly PE|MP|ET|NE|WP|AM|PG in the paged modes".into()
    }
}

/// A memory size from 1 MiB to 64 MiB, in pages, never the kit's 2 MiB: a stack top the lab
/// cannot know in advance.
fn random_mem_size(rng: &mut Rng) -> u64 {
    let pages = rng.range(0x100, 0x4000 - 1);
    let pages = if pages * 0x1000 == GUEST_MEMORY_SIZE as u64 {
        0x4000 - 1
    } else {
        pages
    };
    pages * 0x1000
}

/// A page-aligned CR3 for the checks: the tables may be anywhere, not only at 0x2000.
fn random_cr3(rng: &mut Rng) -> u64 {
    rng.range(1, 0x1_0000) << 12
}

/// The lab's `special_registers` for one mode, on a random incoming state and CR3: what it
/// returned, and what it was given.
fn special(ctx: &mut Ctx, mode: Mode, given: kvm_sregs, cr3: u64) -> Result<kvm_sregs, Stop> {
    let found = ctx.call(&SpecialRegisters {
        calls: vec![SpecialCall {
            mode: wire(mode),
            sregs: given,
            cr3,
        }],
    })?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| Stop::Failed(fail(LAB, SPECIAL, "the probe returned no registers")))
}

/// The documented segment of a mode: the code segment is 64-bit in long mode only.
fn documented_segment(mode: Mode, code: bool) -> &'static Segment {
    match (code, mode) {
        (true, Mode::Long) => &CODE_64,
        (true, _) => &CODE_32,
        (false, _) => &DATA,
    }
}

/// Compares one segment field by field with its documented values, naming the first that differs.
fn expect_segment(
    function: &str,
    name: &str,
    found: &kvm_segment,
    expected: &Segment,
    mode: Mode,
) -> Result<(), String> {
    let fields: [(&str, u64, u64, &str); 10] = [
        (
            "selector",
            found.selector.into(),
            expected.selector.into(),
            "CS uses selector 0x8, the data segments 0x10 (kvm-hello-world's values; no GDT is read)",
        ),
        ("base", found.base, expected.base, "a flat segment starts at 0"),
        (
            "limit",
            found.limit.into(),
            expected.limit.into(),
            "a flat segment covers 4 GiB: limit 0xffffffff with G = 1",
        ),
        (
            "type",
            found.type_.into(),
            expected.type_.into(),
            "code is type 11 (execute/read, accessed), data type 3 (read/write, accessed)",
        ),
        (
            "present",
            found.present.into(),
            expected.present.into(),
            "a segment that is not present faults on first use",
        ),
        ("dpl", found.dpl.into(), expected.dpl.into(), "the guest runs in ring 0"),
        (
            "s",
            found.s.into(),
            expected.s.into(),
            "S = 1 marks a code or data descriptor (0 is a system descriptor)",
        ),
        (
            "g",
            found.g.into(),
            expected.g.into(),
            "G = 1 counts the limit in 4 KiB units",
        ),
        (
            "l",
            found.l.into(),
            expected.l.into(),
            if mode == Mode::Long && name == "CS" {
                "with L = 0 the code runs in 32-bit compatibility mode, not 64-bit"
            } else {
                "L = 1 is for 64-bit code segments only"
            },
        ),
        (
            "db",
            found.db.into(),
            expected.db.into(),
            if found.l == 1 && found.db == 1 {
                "L = 1 with D = 1 is reserved: VM entry fails"
            } else if mode == Mode::Long && name == "CS" {
                "a 64-bit code segment has D = 0"
            } else {
                "D = 1 makes 32-bit the default operand size"
            },
        ),
    ];
    for (field, found, expected, why) in fields {
        let label = format!("{name}.{field} in {mode} mode");
        expect_field(LAB, function, &label, found, expected, describe::hex, why)?;
    }
    Ok(())
}

/// What no mode changes must come back as it was given: the descriptor tables, TR and LDTR,
/// CR2, CR8, the APIC base and the pending interrupts. The input is random, so a canned state
/// fails here.
fn expect_kept(mode: Mode, found: &kvm_sregs, given: &kvm_sregs) -> Result<(), String> {
    let why = "no mode setup changes it: keep the value the vCPU had (the sregs argument, from KVM_GET_SREGS)";
    let fields: [(&str, u64, u64); 12] = [
        ("GDT.base", found.gdt.base, given.gdt.base),
        ("GDT.limit", found.gdt.limit.into(), given.gdt.limit.into()),
        ("IDT.base", found.idt.base, given.idt.base),
        ("IDT.limit", found.idt.limit.into(), given.idt.limit.into()),
        ("TR.selector", found.tr.selector.into(), given.tr.selector.into()),
        ("TR.base", found.tr.base, given.tr.base),
        ("LDTR.selector", found.ldt.selector.into(), given.ldt.selector.into()),
        ("LDTR.base", found.ldt.base, given.ldt.base),
        ("CR2", found.cr2, given.cr2),
        ("CR8", found.cr8, given.cr8),
        ("APIC base", found.apic_base, given.apic_base),
        (
            "interrupt_bitmap[0]",
            found.interrupt_bitmap[0],
            given.interrupt_bitmap[0],
        ),
    ];
    for (field, found, expected) in fields {
        expect_field(
            LAB,
            SPECIAL,
            &format!("{field} in {mode} mode"),
            found,
            expected,
            describe::hex,
            why,
        )?;
    }
    if found.tr != given.tr || found.ldt != given.ldt || found.interrupt_bitmap != given.interrupt_bitmap {
        return Err(fail(
            LAB,
            SPECIAL,
            format!("TR, LDTR or the interrupt bitmap changed in {mode} mode: {why}"),
        ));
    }
    Ok(())
}

fn flat_segments(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut calls = Vec::new();
    for mode in [Mode::Long, Mode::Protected, Mode::Paged32] {
        for code in [true, false] {
            calls.push((mode, code));
        }
    }
    let found = ctx.call(&FlatSegments {
        calls: calls.iter().map(|&(mode, code)| (wire(mode), code)).collect(),
    })?;
    for (&(mode, code), segment) in calls.iter().zip(&found) {
        let name = if code { "code segment" } else { "data segment" };
        expect_segment(SEGMENT, name, segment, documented_segment(mode, code), mode)?;
    }
    if found.len() != calls.len() {
        return Err(fail(LAB, SEGMENT, "the probe returned fewer segments than it was asked for").into());
    }
    Ok(())
}

fn long_mode_control_registers(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let cr3 = random_cr3(&mut rng);
    let given = reset_state(&mut rng);
    let s = special(ctx, Mode::Long, given, cr3)?;
    expect_field(
        LAB,
        SPECIAL,
        "CR0 in long mode",
        s.cr0,
        CR0_PAGED,
        describe::cr0,
        &cr0_why(s.cr0, CR0_PAGED, Mode::Long),
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CR3 in long mode",
        s.cr3,
        cr3,
        describe::hex,
        "CR3 must hold the PML4 address it is given",
    )?;
    let cr4_why = if s.cr4 & CR4_PAE == 0 {
        "long mode requires PAE (64-bit entries): KVM_SET_SREGS refuses LME and PG without it (EINVAL)"
    } else {
        "long mode needs only PAE here"
    };
    expect_field(
        LAB,
        SPECIAL,
        "CR4 in long mode",
        s.cr4,
        CR4_LONG,
        describe::cr4,
        cr4_why,
    )?;
    let efer_why = if s.efer & EFER_LMA == 0 {
        "KVM_SET_SREGS refuses LME with CR0.PG and not LMA (EINVAL): a CPU sets LMA itself when it turns paging on, KVM does not"
    } else {
        "long mode needs LME (enable) and LMA (active)"
    };
    expect_field(
        LAB,
        SPECIAL,
        "EFER in long mode",
        s.efer,
        EFER_LONG,
        describe::efer,
        efer_why,
    )?;
    Ok(expect_kept(Mode::Long, &s, &given)?)
}

fn long_mode_code_segment(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let cr3 = random_cr3(&mut rng);
    let given = reset_state(&mut rng);
    let s = special(ctx, Mode::Long, given, cr3)?;
    expect_segment(SPECIAL, "CS", &s.cs, &CODE_64, Mode::Long)?;
    Ok(expect_kept(Mode::Long, &s, &given)?)
}

fn data_segments(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut modes = [Mode::Long, Mode::Protected, Mode::Paged32];
    rng.shuffle(&mut modes);
    let calls: Vec<(Mode, kvm_sregs, u64)> = modes
        .iter()
        .map(|&mode| {
            let cr3 = random_cr3(&mut rng);
            (mode, reset_state(&mut rng), cr3)
        })
        .collect();
    let found = ctx.call(&SpecialRegisters {
        calls: calls
            .iter()
            .map(|&(mode, sregs, cr3)| SpecialCall {
                mode: wire(mode),
                sregs,
                cr3,
            })
            .collect(),
    })?;
    if found.len() != calls.len() {
        return Err(fail(LAB, SPECIAL, "the probe returned fewer states than it was asked for").into());
    }
    for (&(mode, given, _), s) in calls.iter().zip(&found) {
        for (name, seg) in [
            ("DS", &s.ds),
            ("ES", &s.es),
            ("FS", &s.fs),
            ("GS", &s.gs),
            ("SS", &s.ss),
        ] {
            expect_segment(SPECIAL, name, seg, &DATA, mode)?;
        }
        expect_kept(mode, s, &given)?;
    }
    Ok(())
}

fn protected_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let given = reset_state(&mut rng);
    let cr3 = random_cr3(&mut rng);
    let s = special(ctx, Mode::Protected, given, cr3)?;
    // Protected mode sets PE in the CR0 it is given (random cache bits): nothing else.
    let cr0 = given.cr0 | CR0_PE;
    expect_field(
        LAB,
        SPECIAL,
        "CR0 in protected mode",
        s.cr0,
        cr0,
        describe::cr0,
        &cr0_why(s.cr0, cr0, Mode::Protected),
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CR3 in protected mode",
        s.cr3,
        given.cr3,
        describe::hex,
        "without paging CR3 is unused: leave it",
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CR4 in protected mode",
        s.cr4,
        given.cr4,
        describe::cr4,
        "protected mode without paging needs no CR4 bit",
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "EFER in protected mode",
        s.efer,
        given.efer,
        describe::efer,
        "EFER.LME/LMA are for long mode only",
    )?;
    expect_segment(SPECIAL, "CS", &s.cs, &CODE_32, Mode::Protected)?;
    Ok(expect_kept(Mode::Protected, &s, &given)?)
}

fn paged32_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let given = kvm_sregs {
        efer: EFER_LME,
        ..reset_state(&mut rng)
    };
    let cr3 = random_cr3(&mut rng);
    let s = special(ctx, Mode::Paged32, given, cr3)?;
    expect_field(
        LAB,
        SPECIAL,
        "CR0 in paged32 mode",
        s.cr0,
        CR0_PAGED,
        describe::cr0,
        &cr0_why(s.cr0, CR0_PAGED, Mode::Paged32),
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CR3 in paged32 mode",
        s.cr3,
        cr3,
        describe::hex,
        "CR3 must hold the page directory address it is given",
    )?;
    let cr4_why = if s.cr4 & CR4_PAE != 0 {
        "with PAE the CPU would read 8-byte entries: the paged32 directory has 4-byte ones"
    } else {
        "PSE lets a directory entry map a 4 MiB page"
    };
    expect_field(
        LAB,
        SPECIAL,
        "CR4 in paged32 mode",
        s.cr4,
        CR4_PAGED32,
        describe::cr4,
        cr4_why,
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "EFER in paged32 mode",
        s.efer,
        EFER_PAGED32,
        describe::efer,
        "paged32 is not long mode: clear EFER",
    )?;
    expect_segment(SPECIAL, "CS", &s.cs, &CODE_32, Mode::Paged32)?;
    Ok(expect_kept(Mode::Paged32, &s, &given)?)
}

fn real_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let given = reset_state(&mut rng);
    let cr3 = random_cr3(&mut rng);
    let s = special(ctx, Mode::Real, given, cr3)?;
    expect_field(
        LAB,
        SPECIAL,
        "CS.selector in real mode",
        s.cs.selector.into(),
        documented::REAL_CS_SELECTOR,
        describe::hex,
        "the image is at 0, so CS = 0",
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CS.base in real mode",
        s.cs.base,
        documented::REAL_CS_BASE,
        describe::hex,
        "after reset CS.base is 0xffff0000; real-mode code at 0 needs base 0",
    )?;
    // Everything but CS's selector and base is the random state it was given.
    let mut rest = s;
    rest.cs.selector = given.cs.selector;
    rest.cs.base = given.cs.base;
    if rest != given {
        let what = format!(
            "changed more than CS.selector and CS.base (CR0 {}, CS {}): real mode keeps the reset state",
            describe::cr0(s.cr0),
            describe::segment(&s.cs)
        );
        return Err(fail(LAB, SPECIAL, what).into());
    }
    Ok(())
}

fn general_registers(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut modes = Mode::ALL;
    rng.shuffle(&mut modes);
    // The kit's 2 MiB first, then a memory size the lab cannot know in advance.
    let sizes = [GUEST_MEMORY_SIZE as u64, random_mem_size(&mut rng)];
    let calls: Vec<(Mode, u64)> = sizes
        .iter()
        .flat_map(|&size| modes.iter().map(move |&mode| (mode, size)))
        .collect();
    let found = ctx.call(&GeneralRegisters {
        calls: calls.iter().map(|&(mode, size)| (wire(mode), size)).collect(),
    })?;
    if found.len() != calls.len() {
        return Err(fail(
            LAB,
            GENERAL,
            "the probe returned fewer register sets than it was asked for",
        )
        .into());
    }
    for (&(mode, mem_size), r) in calls.iter().zip(&found) {
        expect_general(mode, mem_size, r)?;
    }
    Ok(())
}

fn expect_general(mode: Mode, mem_size: u64, r: &kvm_regs) -> Result<(), String> {
    let rsp = if mode == Mode::Real {
        documented::REAL_RSP
    } else {
        mem_size
    };
    let rsp_why = if mode == Mode::Real {
        "SP = 0 wraps to 0xfffe on the first push: the top of the 64 KiB that SS = 0 reaches"
    } else if r.rsp == 0 {
        "with RSP = 0 the first push or call writes below guest physical 0, where there is no memory"
    } else {
        "the stack starts at the top of guest memory (mem_size) and grows down"
    };
    expect_field(
        LAB,
        GENERAL,
        &format!("RIP in {mode} mode"),
        r.rip,
        documented::RIP,
        describe::hex,
        "the image is loaded at guest physical 0, so the first instruction is at 0",
    )?;
    expect_field(
        LAB,
        GENERAL,
        &format!("RSP in {mode} mode"),
        r.rsp,
        rsp,
        describe::hex,
        rsp_why,
    )?;
    expect_field(
        LAB,
        GENERAL,
        &format!("RFLAGS in {mode} mode"),
        r.rflags,
        documented::RFLAGS,
        describe::hex,
        "bit 1 of RFLAGS is reserved and must be 1; every other flag (IF too) starts clear",
    )?;
    let rest = kvm_regs {
        rip: 0,
        rsp: 0,
        rflags: 0,
        ..*r
    };
    if rest != kvm_regs::default() {
        return Err(fail(
            LAB,
            GENERAL,
            format!("in {mode} mode a register other than RIP, RSP and RFLAGS is not 0: {rest:?}"),
        ));
    }
    Ok(())
}

// ---- A guest run with the lab's registers ----

/// Page-table entry bits the run's tables use (SDM Vol. 3A 4.3, 4.5).
const PTE_P_RW: u64 = 0b11;
/// PS: a 2 MiB (long mode) or 4 MiB (paged32) page.
const PTE_LARGE: u64 = 1 << 7;
/// Where the run's tables may go: pages of the first MiB above the guest's own pages.
const TABLE_PAGES: (u64, u64) = (0x10, 0x100);
/// Exits enough for any guest of these checks (one per byte printed, and the HLT).
const MAX_EXITS: u32 = 256;

/// A guest made for one run and what it must leave when the registers are right.
#[derive(Debug)]
struct ModeGuest {
    mode: Mode,
    cr3: u64,
    mem_size: u64,
    /// The page tables, as 8-byte words.
    tables: Vec<(u64, u64)>,
    image: Vec<u8>,
    /// What it prints on the console port.
    text: Vec<u8>,
    /// (address, expected 8-byte word, what it shows).
    words: Vec<(u64, u64, Effect)>,
    /// RAX at the HLT, masked to the operand size of the mode.
    rax: (u64, u64),
}

/// What a watched word shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// The value pushed, and the flags pushed after it, at the top of the stack.
    Stack,
    /// A value stored through DS at a random address.
    Store,
}

/// Identity-maps `pages` (4 KiB pages) and the large page holding `large` (when it is not in
/// the first large page) with tables at random pages: 8-byte entries four levels deep (long
/// mode) or 4-byte entries two levels deep (paged32). Returns CR3 and the words to write.
fn identity_tables(rng: &mut Rng, mode: Mode, pages: &[u64], large: u64) -> (u64, Vec<(u64, u64)>) {
    let mut free: Vec<u64> = (TABLE_PAGES.0..TABLE_PAGES.1)
        .map(|p| p << 12)
        .filter(|p| !pages.contains(p))
        .collect();
    rng.shuffle(&mut free);
    let mut entries: Vec<(u64, u64)> = Vec::new(); // (address, entry) of the entry size
    let long = mode == Mode::Long;
    let (entry_size, large_shift) = if long { (8, 21) } else { (4, 22) };
    let index_bits = if long { 9 } else { 10 };
    let index = |addr: u64, shift: u32| (addr >> shift) & ((1 << index_bits) - 1);
    let cr3 = free.pop().expect("free pages");
    // Long mode: PML4[0] -> PDPT[0] -> the directory (guest memory is below 1 GiB).
    let directory = if long {
        let pdpt = free.pop().expect("free pages");
        let pd = free.pop().expect("free pages");
        entries.push((cr3, pdpt | PTE_P_RW));
        entries.push((pdpt, pd | PTE_P_RW));
        pd
    } else {
        cr3
    };
    let table = free.pop().expect("free pages");
    entries.push((directory, table | PTE_P_RW));
    for &page in pages {
        entries.push((table + entry_size * index(page, 12), page | PTE_P_RW));
    }
    let region = large >> large_shift;
    if region != 0 {
        entries.push((
            directory + entry_size * index(large, large_shift),
            region << large_shift | PTE_P_RW | PTE_LARGE,
        ));
    }
    // Merge entries into 8-byte words (two 4-byte entries may share one).
    let mut words: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for (addr, entry) in entries {
        let word = words.entry(addr & !7).or_default();
        *word |= entry << ((addr & 7) * 8);
    }
    (cr3, words.into_iter().collect())
}

/// `mov al, byte; out CONSOLE_PORT, al` per byte: the same bytes in every mode.
fn print_code(text: &[u8]) -> Vec<u8> {
    text.iter()
        .flat_map(|&byte| [0xb0, byte, 0xe6, CONSOLE_PORT as u8])
        .collect()
}

/// A guest for `mode`: prints random text, pushes a random value and the flags, loads RAX
/// with a random value of the mode's operand size (wrong with a wrong CS.L or CS.D), stores a
/// random value at a random address through DS, halts. Its memory size and CR3 are random too.
fn mode_guest(rng: &mut Rng, mode: Mode) -> ModeGuest {
    let text = rng.text_between(1, 24);
    let mem_size = random_mem_size(rng);
    // A page of its own for the store, below 64 KiB (real mode reaches no further) and below
    // the real-mode stack's page.
    let store = rng.range(1, 0xf) << 12 | rng.range(0, 0x200) << 3;
    let mut code = print_code(&text);
    // (operand size in bytes, where the push lands: the 8-byte word that holds it)
    let (width, stack_word) = match mode {
        Mode::Long => (8, mem_size - 16),
        Mode::Protected | Mode::Paged32 => (4, mem_size - 8),
        // SP = 0 wraps: the value lands at 0xfffe, the flags at 0xfffc.
        Mode::Real => (2, 0xfff8),
    };
    let mask = if width == 8 { u64::MAX } else { (1 << (8 * width)) - 1 };
    // Immediates are at most 32 bits; in long mode below 2^31, as they are sign-extended.
    let imm_mask = if width == 8 { 0x7fff_ffff } else { mask };
    let pushed = rng.next_u64() & imm_mask;
    let value = rng.next_u64() & mask;
    let stored = rng.next_u64() & imm_mask;
    let imm = |code: &mut Vec<u8>, v: u64| {
        let n = if width == 2 { 2 } else { 4 };
        code.extend_from_slice(&v.to_le_bytes()[..n]);
    };
    code.push(0x68); // push imm16/imm32
    imm(&mut code, pushed);
    code.push(0x9c); // pushf / pushfd / pushfq
    if width == 8 {
        code.extend_from_slice(&[0x48, 0xb8]); // mov rax, imm64
        code.extend_from_slice(&value.to_le_bytes());
    } else {
        code.push(0xb8); // mov ax/eax, imm16/imm32
        imm(&mut code, value);
    }
    match width {
        8 => code.extend_from_slice(&[0x48, 0xc7, 0x04, 0x25]), // mov qword [disp32], imm32
        4 => code.extend_from_slice(&[0xc7, 0x05]),             // mov dword [disp32], imm32
        _ => code.extend_from_slice(&[0xc7, 0x06]),             // mov word [disp16], imm16
    }
    imm(&mut code, store);
    imm(&mut code, stored);
    code.push(0xf4); // hlt
    // The pushed value sits above the flags, in the same or the next word.
    let stack = match width {
        8 => vec![(stack_word + 8, pushed), (stack_word, documented::RFLAGS)],
        4 => vec![(stack_word, pushed << 32 | documented::RFLAGS)],
        _ => vec![(stack_word, pushed << 48 | documented::RFLAGS << 32)],
    };
    let stack_page = (mem_size - 1) & !0xfff;
    let (cr3, tables) = match mode {
        Mode::Long | Mode::Paged32 => {
            let shift = if mode == Mode::Long { 21 } else { 22 };
            let mut pages = vec![0, store & !0xfff];
            if (mem_size - 1) >> shift == 0 {
                pages.push(stack_page);
            }
            identity_tables(rng, mode, &pages, mem_size - 1)
        }
        // Unused without paging: a random CR3 the lab must not put to use.
        _ => (random_cr3(rng), Vec::new()),
    };
    let mut words: Vec<(u64, u64, Effect)> = stack.into_iter().map(|(a, v)| (a, v, Effect::Stack)).collect();
    words.push((store, stored, Effect::Store));
    ModeGuest {
        mode,
        cr3,
        mem_size,
        tables,
        image: code,
        text,
        words,
        rax: (mask, value),
    }
}

/// Runs `guest` with the lab's registers and judges what it did.
fn run_guest(ctx: &mut Ctx, guest: &ModeGuest) -> Result<(), Stop> {
    let mode = guest.mode;
    let run = ctx.call(&RunWithRegisters {
        mode: wire(mode),
        cr3: guest.cr3,
        mem_size: guest.mem_size,
        memory: guest.tables.clone(),
        image: guest.image.clone(),
        // Whole pages, not the words it expects: the first 64 KiB (the image, the store, the
        // real-mode stack) and the last page (the stack of the other modes).
        watch: vec![(0, 0x1_0000), (guest.mem_size - 0x1000, 0x1000)],
        max_exits: MAX_EXITS,
    })?;
    let state = || {
        format!(
            "the lab's registers: CR0 {}, CR4 {}, EFER {}, CS {}, RIP {:#x}, RSP {:#x}, RFLAGS {:#x}",
            describe::cr0(run.sregs.cr0),
            describe::cr4(run.sregs.cr4),
            describe::efer(run.sregs.efer),
            describe::segment(&run.sregs.cs),
            run.regs.rip,
            run.regs.rsp,
            run.regs.rflags
        )
    };
    let both = "special_registers/general_registers";
    match &run.end {
        RunEnd::Halted => {}
        RunEnd::Refused(why) => {
            return Err(fail(
                LAB,
                both,
                format!("KVM refused the {mode}-mode registers: {why} ({})", state()),
            )
            .into());
        }
        RunEnd::Stopped(exit) => {
            return Err(fail(
                LAB,
                both,
                format!(
                    "a {mode}-mode guest stopped with {exit} before its HLT: its code at 0 did not run as {mode}-mode code ({})",
                    state()
                ),
            )
            .into());
        }
        RunEnd::TooManyExits => {
            return Err(fail(
                LAB,
                both,
                format!(
                    "a {mode}-mode guest made {MAX_EXITS} exits and did not halt: it did not run the code at 0 as {mode}-mode code ({})",
                    state()
                ),
            )
            .into());
        }
    }
    let printed: Vec<u8> = run
        .out
        .iter()
        .filter(|&&(port, _)| port == CONSOLE_PORT)
        .map(|&(_, byte)| byte)
        .collect();
    if printed != guest.text {
        return Err(fail(
            LAB,
            both,
            format!(
                "a {mode}-mode guest printed {:?}, expected {:?}: it did not run from 0 in {mode} mode ({})",
                String::from_utf8_lossy(&printed),
                String::from_utf8_lossy(&guest.text),
                state()
            ),
        )
        .into());
    }
    let after = run
        .regs_after
        .as_ref()
        .map_err(|err| fail(LAB, both, format!("KVM gave no registers after the run: {err}")))?;
    let (mask, rax) = guest.rax;
    if after.rax & mask != rax {
        let why = match mode {
            Mode::Long => {
                "a 64-bit `mov rax, imm64` loaded something else: the code did not run as 64-bit code (CS.L = 1, CS.D = 0, EFER.LMA)"
            }
            Mode::Real => {
                "a 16-bit `mov ax, imm16` loaded something else: the code did not run as 16-bit real-mode code"
            }
            _ => {
                "a 32-bit `mov eax, imm32` loaded something else: the code did not run as 32-bit code (CS.D = 1, CS.L = 0)"
            }
        };
        return Err(fail(
            LAB,
            SPECIAL,
            format!(
                "after the {mode}-mode guest, RAX = {:#x}, expected {rax:#x}: {why} ({})",
                after.rax & mask,
                state()
            ),
        )
        .into());
    }
    for &(addr, expected, effect) in &guest.words {
        let found = run.memory.at(addr);
        if found == expected {
            continue;
        }
        let (function, why) = match effect {
            Effect::Stack => (
                GENERAL,
                "the guest pushed a value and then the flags: they land below the stack's top (RSP = mem_size in the 32- and 64-bit modes, SP = 0 in real mode) and show RFLAGS as the lab set it",
            ),
            Effect::Store => (
                SPECIAL,
                "the guest stored a value through DS: with a flat data segment (base 0) it lands at that address",
            ),
        };
        return Err(fail(
            LAB,
            function,
            format!(
                "after the {mode}-mode guest, the word at {addr:#x} = {found:#x}, expected {expected:#x}: {why} ({})",
                state()
            ),
        )
        .into());
    }
    Ok(())
}

fn guest_runs_in_each_mode(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut modes = [Mode::Long, Mode::Protected, Mode::Real];
    rng.shuffle(&mut modes);
    for mode in modes {
        let guest = mode_guest(&mut rng, mode);
        run_guest(ctx, &guest)?;
    }
    Ok(())
}

fn guest_runs_in_paged32(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let guest = mode_guest(&mut rng, Mode::Paged32);
    run_guest(ctx, &guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 4-byte entry at `addr` of the generated words.
    fn entry32(words: &[(u64, u64)], addr: u64) -> u64 {
        let word = words.iter().find(|&&(a, _)| a == addr & !7).map_or(0, |&(_, w)| w);
        (word >> ((addr & 7) * 8)) & 0xffff_ffff
    }

    /// This host (PVM) cannot run paged32 guests: the tables of `lab3_guest_runs_in_paged32` are
    /// checked here, entry by entry, for every address the guest touches (SDM Vol. 3A 4.3).
    #[test]
    fn paged32_tables_map_what_the_guest_touches() {
        for seed in 0..200 {
            let guest = mode_guest(&mut Rng::new(seed), Mode::Paged32);
            let touched = [0, guest.image.len() as u64 - 1, guest.mem_size - 1, guest.mem_size - 8]
                .into_iter()
                .chain(guest.words.iter().map(|&(addr, _, _)| addr));
            for addr in touched {
                let pde = entry32(&guest.tables, guest.cr3 + 4 * (addr >> 22));
                assert_eq!(
                    pde & PTE_P_RW,
                    PTE_P_RW,
                    "seed {seed}: {addr:#x} has no directory entry"
                );
                let physical = if pde & PTE_LARGE != 0 {
                    (pde & 0xffc0_0000) | (addr & 0x3f_ffff)
                } else {
                    let pte = entry32(&guest.tables, (pde & !0xfff) + 4 * ((addr >> 12) & 0x3ff));
                    assert_eq!(pte & PTE_P_RW, PTE_P_RW, "seed {seed}: {addr:#x} has no table entry");
                    (pte & !0xfff) | (addr & 0xfff)
                };
                assert_eq!(physical, addr, "seed {seed}: not an identity map");
            }
            for &(addr, _) in &guest.tables {
                assert!(
                    addr >= 0x1000 && addr + 8 <= guest.mem_size,
                    "seed {seed}: a table outside memory"
                );
                assert_ne!(
                    addr & !0xfff,
                    guest.words[0].0 & !0xfff,
                    "seed {seed}: a table on the stack"
                );
            }
        }
    }
}
