//! Lab 3: register values per mode, checked as plain values (no KVM).

use kit_common::{GUEST_MEMORY_SIZE, Mode};
use lab3_registers::{
    CODE_SELECTOR, CR0_AM, CR0_CD, CR0_ET, CR0_MP, CR0_NE, CR0_NW, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE,
    DATA_SELECTOR, EFER_LMA, EFER_LME, FLAT_LIMIT, SEG_TYPE_CODE, SEG_TYPE_DATA, kvm_regs, kvm_segment, kvm_sregs,
};

use super::{Group, expect_field, fail};
use crate::rng::Rng;
use crate::{Check, Ctx, Part, describe};

const LAB: u8 = 3;
/// Lab 3's checks need no KVM and no other lab.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
const SPECIAL: &str = "special_registers";
const GENERAL: &str = "general_registers";
const SEGMENT: &str = "flat_segment";
/// CR0 of both paged modes.
const CR0_PAGED: u64 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;

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
];

/// A state as KVM_GET_SREGS might give it, with random values where a VMM must keep what it got
/// (descriptor tables, APIC base, CR2, CR8, CR0's cache bits).
fn reset_state(rng: &mut Rng) -> kvm_sregs {
    let mut cr0 = CR0_ET;
    for bit in [CR0_CD, CR0_NW, CR0_NE, CR0_MP] {
        if rng.chance(50) {
            cr0 |= bit;
        }
    }
    let mut s = kvm_sregs {
        cr0,
        cr2: rng.next_u64() & 0xffff_ffff_f000,
        cr8: rng.range(0, 16),
        apic_base: 0xfee0_0000 | rng.range(0, 2) << 11 | 1 << 8,
        ..Default::default()
    };
    s.gdt.base = rng.range(0, 0x10_0000);
    s.gdt.limit = rng.range(0, 0x1_0000) as u16;
    s.idt.base = rng.range(0, 0x10_0000);
    s.idt.limit = rng.range(0, 0x1_0000) as u16;
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

/// A page-aligned CR3 for the checks: the tables may be anywhere, not only at 0x2000.
fn random_cr3(rng: &mut Rng) -> u64 {
    rng.range(1, 0x1_0000) << 12
}

/// Compares one segment field by field, naming the first that differs.
fn expect_segment(
    function: &str,
    name: &str,
    found: &kvm_segment,
    expected: &kvm_segment,
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

fn expected_segment(mode: Mode, code: bool) -> kvm_segment {
    let long_code = code && mode == Mode::Long;
    kvm_segment {
        base: 0,
        limit: FLAT_LIMIT,
        selector: if code { CODE_SELECTOR } else { DATA_SELECTOR },
        type_: if code { SEG_TYPE_CODE } else { SEG_TYPE_DATA },
        present: 1,
        dpl: 0,
        db: u8::from(!long_code),
        s: 1,
        l: u8::from(long_code),
        g: 1,
        ..Default::default()
    }
}

fn flat_segments(ctx: &Ctx) -> Result<(), String> {
    for mode in [Mode::Long, Mode::Protected, Mode::Paged32] {
        for (code, name) in [(true, "code segment"), (false, "data segment")] {
            let found = (ctx.labs.flat_segment)(mode, code);
            expect_segment(SEGMENT, name, &found, &expected_segment(mode, code), mode)?;
        }
    }
    Ok(())
}

fn long_mode_control_registers(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let cr3 = random_cr3(&mut rng);
    let s = (ctx.labs.special_registers)(Mode::Long, reset_state(&mut rng), cr3);
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
    expect_field(LAB, SPECIAL, "CR4 in long mode", s.cr4, CR4_PAE, describe::cr4, cr4_why)?;
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
        EFER_LME | EFER_LMA,
        describe::efer,
        efer_why,
    )
}

fn long_mode_code_segment(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let cr3 = random_cr3(&mut rng);
    let s = (ctx.labs.special_registers)(Mode::Long, reset_state(&mut rng), cr3);
    expect_segment(SPECIAL, "CS", &s.cs, &expected_segment(Mode::Long, true), Mode::Long)
}

fn data_segments(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let mut modes = [Mode::Long, Mode::Protected, Mode::Paged32];
    rng.shuffle(&mut modes);
    for mode in modes {
        let cr3 = random_cr3(&mut rng);
        let s = (ctx.labs.special_registers)(mode, reset_state(&mut rng), cr3);
        let expected = expected_segment(mode, false);
        for (name, seg) in [
            ("DS", &s.ds),
            ("ES", &s.es),
            ("FS", &s.fs),
            ("GS", &s.gs),
            ("SS", &s.ss),
        ] {
            expect_segment(SPECIAL, name, seg, &expected, mode)?;
        }
    }
    Ok(())
}

fn protected_mode(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let reset = reset_state(&mut rng);
    let s = (ctx.labs.special_registers)(Mode::Protected, reset, random_cr3(&mut rng));
    let cr0 = reset.cr0 | CR0_PE;
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
        0,
        describe::hex,
        "without paging CR3 is unused: leave it",
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CR4 in protected mode",
        s.cr4,
        0,
        describe::cr4,
        "protected mode without paging needs no CR4 bit",
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "EFER in protected mode",
        s.efer,
        0,
        describe::efer,
        "EFER.LME/LMA are for long mode only",
    )?;
    expect_segment(
        SPECIAL,
        "CS",
        &s.cs,
        &expected_segment(Mode::Protected, true),
        Mode::Protected,
    )
}

fn paged32_mode(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let reset = kvm_sregs {
        efer: EFER_LME,
        ..reset_state(&mut rng)
    };
    let cr3 = random_cr3(&mut rng);
    let s = (ctx.labs.special_registers)(Mode::Paged32, reset, cr3);
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
        CR4_PSE,
        describe::cr4,
        cr4_why,
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "EFER in paged32 mode",
        s.efer,
        0,
        describe::efer,
        "paged32 is not long mode: clear EFER",
    )?;
    expect_segment(
        SPECIAL,
        "CS",
        &s.cs,
        &expected_segment(Mode::Paged32, true),
        Mode::Paged32,
    )
}

fn real_mode(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let reset = reset_state(&mut rng);
    let s = (ctx.labs.special_registers)(Mode::Real, reset, random_cr3(&mut rng));
    expect_field(
        LAB,
        SPECIAL,
        "CS.selector in real mode",
        s.cs.selector.into(),
        0,
        describe::hex,
        "the image is at 0, so CS = 0",
    )?;
    expect_field(
        LAB,
        SPECIAL,
        "CS.base in real mode",
        s.cs.base,
        0,
        describe::hex,
        "after reset CS.base is 0xffff0000; real-mode code at 0 needs base 0",
    )?;
    let mut rest = s;
    rest.cs.selector = reset.cs.selector;
    rest.cs.base = reset.cs.base;
    if rest != reset {
        let what = format!(
            "changed more than CS.selector and CS.base (CR0 {}, CS {}): real mode keeps the reset state",
            describe::cr0(s.cr0),
            describe::segment(&s.cs)
        );
        return Err(fail(LAB, SPECIAL, what));
    }
    Ok(())
}

fn general_registers(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let mut modes = Mode::ALL;
    rng.shuffle(&mut modes);
    // The kit's 2 MiB first, then a memory size the lab cannot know in advance.
    for mem_size in [GUEST_MEMORY_SIZE, rng.range(0x100, 0x4000) as usize * 0x1000] {
        general_registers_for(ctx, &modes, mem_size)?;
    }
    Ok(())
}

fn general_registers_for(ctx: &Ctx, modes: &[Mode], mem_size: usize) -> Result<(), String> {
    for &mode in modes {
        let r = (ctx.labs.general_registers)(mode, mem_size);
        let rsp = if mode == Mode::Real { 0 } else { mem_size as u64 };
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
            0,
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
            2,
            describe::hex,
            "bit 1 of RFLAGS is reserved and must be 1; every other flag (IF too) starts clear",
        )?;
        let rest = kvm_regs {
            rip: 0,
            rsp: 0,
            rflags: 0,
            ..r
        };
        if rest != kvm_regs::default() {
            return Err(fail(
                LAB,
                GENERAL,
                format!("in {mode} mode a register other than RIP, RSP and RFLAGS is not 0: {rest:?}"),
            ));
        }
    }
    Ok(())
}
