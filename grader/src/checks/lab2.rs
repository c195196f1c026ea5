//! Lab 2: the page tables and the walk, checked in a fresh guest memory (no KVM).

use lab2_paging::{
    ENTRY_ADDR_MASK, Level, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER, Walk,
    WalkFault,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Group, expect_field, fail};
use crate::{Check, Ctx, Part, describe};

const LAB: u8 = 2;
/// Lab 2's checks need no KVM and no other lab.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
const LONG: &str = "setup_long_mode_page_tables";
const PAGED32: &str = "setup_paged32_page_directory";
const TRANSLATE: &str = "translate";
/// Present, RW and User: the flags of every entry of the identity map.
const FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_USER;

/// The checks of lab 2.
pub const CHECKS: &[Check] = &[
    PURE.check(
        "lab2_long_mode_cr3",
        "setup_long_mode_page_tables returns CR3 = 0x2000",
        1,
        long_mode_cr3,
    ),
    PURE.check("lab2_pml4_entry", "PML4[0] points at the PDPT", 2, pml4_entry),
    PURE.check("lab2_pdpt_entry", "PDPT[0] points at the PD", 2, pdpt_entry),
    PURE.check("lab2_pd_entry", "PD[0] maps one 2 MiB page", 2, pd_entry),
    PURE.check(
        "lab2_nothing_else_mapped",
        "no other entry, no other byte written",
        2,
        nothing_else_mapped,
    ),
    PURE.check(
        "lab2_paged32_directory",
        "the paged32 directory maps one 4 MiB page",
        2,
        paged32_directory,
    ),
    PURE.check(
        "lab2_translate_identity",
        "translate walks PML4, PDPT, PD for 0x400",
        2,
        translate_identity,
    ),
    PURE.check(
        "lab2_translate_faults",
        "translate stops at a clear P bit and a non-canonical address",
        2,
        translate_faults,
    ),
    PURE.check(
        "lab2_translate_other_pages",
        "translate follows 4 KiB and 1 GiB pages",
        2,
        translate_other_pages,
    ),
];

/// 2 MiB of zeroed guest memory, as kvm-hello gives it.
pub fn fresh_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), kit_common::GUEST_MEMORY_SIZE)])
        .expect("the grader can allocate 2 MiB")
}

fn read_u64(memory: &GuestMemoryMmap, addr: u64) -> u64 {
    memory.read_obj(GuestAddress(addr)).expect("inside guest memory")
}

fn built_long_tables(ctx: &Ctx) -> Result<(GuestMemoryMmap, u64), String> {
    let memory = fresh_memory();
    let cr3 = (ctx.labs.setup_long_mode_page_tables)(&memory).map_err(|err| fail(LAB, LONG, err))?;
    Ok((memory, cr3))
}

/// Why an entry differs from what the identity map needs.
fn entry_why(level: Level, found: u64, expected: u64) -> String {
    let missing = expected & !found;
    let extra = found & !expected;
    if missing & PTE_PRESENT != 0 {
        return "without P the MMU ignores the entry, so nothing is mapped through it".into();
    }
    if (found ^ expected) & ENTRY_ADDR_MASK != 0 {
        return match level {
            Level::Pml4 => format!("the address bits (12..51) must hold the PDPT at {PDPT_ADDR:#x}"),
            Level::Pdpt => format!("the address bits (12..51) must hold the PD at {PD_ADDR:#x}"),
            _ => "the 2 MiB page of the identity map starts at guest physical 0, so its address bits are 0".into(),
        };
    }
    if missing & PTE_PS != 0 {
        return "without PS the entry points to a page table instead of mapping a 2 MiB page".into();
    }
    if extra & PTE_PS != 0 {
        return match level {
            Level::Pml4 => "PS is reserved in a PML4 entry: the walk faults".into(),
            _ => "with PS a PDPT entry maps a 1 GiB page instead of pointing at the page directory".into(),
        };
    }
    if missing & PTE_RW != 0 {
        return "without RW the guest cannot write through this entry (its stack, the 42 at 0x400)".into();
    }
    if missing & PTE_USER != 0 {
        return "kvm-hello-world sets US on every entry of the identity map, and so does the kit".into();
    }
    format!("bits {extra:#x} are set that the identity map does not use")
}

fn expect_entry(function: &str, level: Level, index: u64, found: u64, expected: u64) -> Result<(), String> {
    let field = format!("{}[{index}]", level.name());
    expect_field(
        LAB,
        function,
        &field,
        found,
        expected,
        describe::entry,
        &entry_why(level, found, expected),
    )
}

fn long_mode_cr3(ctx: &Ctx) -> Result<(), String> {
    let (_, cr3) = built_long_tables(ctx)?;
    expect_field(
        LAB,
        LONG,
        "the returned CR3",
        cr3,
        PML4_ADDR,
        describe::hex,
        "CR3 holds the PML4's guest physical address",
    )
}

fn pml4_entry(ctx: &Ctx) -> Result<(), String> {
    let (memory, _) = built_long_tables(ctx)?;
    expect_entry(LONG, Level::Pml4, 0, read_u64(&memory, PML4_ADDR), PDPT_ADDR | FLAGS)
}

fn pdpt_entry(ctx: &Ctx) -> Result<(), String> {
    let (memory, _) = built_long_tables(ctx)?;
    expect_entry(LONG, Level::Pdpt, 0, read_u64(&memory, PDPT_ADDR), PD_ADDR | FLAGS)
}

fn pd_entry(ctx: &Ctx) -> Result<(), String> {
    let (memory, _) = built_long_tables(ctx)?;
    expect_entry(LONG, Level::Pd, 0, read_u64(&memory, PD_ADDR), FLAGS | PTE_PS)
}

fn nothing_else_mapped(ctx: &Ctx) -> Result<(), String> {
    let (memory, _) = built_long_tables(ctx)?;
    let first_entries = [PML4_ADDR, PDPT_ADDR, PD_ADDR];
    for (level, table) in [(Level::Pml4, PML4_ADDR), (Level::Pdpt, PDPT_ADDR), (Level::Pd, PD_ADDR)] {
        for index in 1..512 {
            let entry = read_u64(&memory, table + index * 8);
            if entry != 0 {
                let what = format!(
                    "{}[{index}] = {}, expected 0: only entry 0 of each table is used; any other entry maps memory the guest does not have",
                    level.name(),
                    describe::entry(entry)
                );
                return Err(fail(LAB, LONG, what));
            }
        }
    }
    let mut bytes = vec![0u8; kit_common::GUEST_MEMORY_SIZE];
    memory
        .read_slice(&mut bytes, GuestAddress(0))
        .expect("2 MiB of guest memory");
    let written = bytes.chunks(8).enumerate().find(|(i, chunk)| {
        let addr = *i as u64 * 8;
        !first_entries.contains(&addr) && chunk.iter().any(|&b| b != 0)
    });
    if let Some((i, _)) = written {
        let addr = i * 8;
        let what = format!(
            "wrote to guest physical {addr:#x}, outside the three entries: the tables must not touch other memory"
        );
        return Err(fail(LAB, LONG, what));
    }
    Ok(())
}

fn paged32_directory(ctx: &Ctx) -> Result<(), String> {
    let memory = fresh_memory();
    let cr3 = (ctx.labs.setup_paged32_page_directory)(&memory).map_err(|err| fail(LAB, PAGED32, err))?;
    expect_field(
        LAB,
        PAGED32,
        "the returned CR3",
        cr3,
        PD32_ADDR,
        describe::hex,
        "CR3 holds the page directory's address",
    )?;
    let pde: u32 = memory.read_obj(GuestAddress(PD32_ADDR)).expect("inside guest memory");
    let expected = FLAGS | PTE_PS;
    let why = if u64::from(pde) & PTE_PS == 0 {
        "without PS (and CR4.PSE) the entry points to a page table instead of mapping a 4 MiB page".to_owned()
    } else {
        entry_why(Level::Pd, u64::from(pde), expected)
    };
    expect_field(
        LAB,
        PAGED32,
        "PD32[0] (4 bytes)",
        u64::from(pde),
        expected,
        describe::entry,
        &why,
    )?;
    for index in 1..1024u64 {
        let entry: u32 = memory
            .read_obj(GuestAddress(PD32_ADDR + index * 4))
            .expect("inside guest memory");
        if entry != 0 {
            let what = format!(
                "PD32[{index}] = {}, expected 0: entries are 4 bytes; only entry 0 is used",
                describe::entry(entry.into())
            );
            return Err(fail(LAB, PAGED32, what));
        }
    }
    Ok(())
}

/// Writes the identity map itself, so the walk is graded apart from the tables.
fn identity_map() -> GuestMemoryMmap {
    let memory = fresh_memory();
    for (addr, entry) in [
        (PML4_ADDR, PDPT_ADDR | FLAGS),
        (PDPT_ADDR, PD_ADDR | FLAGS),
        (PD_ADDR, FLAGS | PTE_PS),
    ] {
        memory
            .write_obj(entry, GuestAddress(addr))
            .expect("inside guest memory");
    }
    memory
}

fn walk_steps(walk: &Walk) -> String {
    let steps: Vec<String> = walk
        .steps
        .iter()
        .map(|s| {
            format!(
                "{}[{}] at {:#x} = {}",
                s.level.name(),
                s.index,
                s.entry_addr,
                describe::entry(s.entry)
            )
        })
        .collect();
    if steps.is_empty() {
        "no step".into()
    } else {
        steps.join(", ")
    }
}

fn expect_walk(
    walk: &Walk,
    gva: u64,
    steps: &[(Level, u64, u64, u64)],
    result: Result<u64, WalkFault>,
) -> Result<(), String> {
    let found: Vec<(Level, u64, u64, u64)> = walk
        .steps
        .iter()
        .map(|s| (s.level, s.index, s.entry_addr, s.entry))
        .collect();
    if found != steps {
        let expected: Vec<String> = steps
            .iter()
            .map(|(level, index, addr, entry)| {
                format!("{}[{index}] at {addr:#x} = {}", level.name(), describe::entry(*entry))
            })
            .collect();
        let what = format!(
            "the walk of {gva:#x} read [{}], expected [{}]: each level's index is 9 bits of the address at the level's shift, and a walk stops at a clear P or a PS entry",
            walk_steps(walk),
            expected.join(", ")
        );
        return Err(fail(LAB, TRANSLATE, what));
    }
    if walk.result != result {
        let show = |r: &Result<u64, WalkFault>| match r {
            Ok(gpa) => format!("physical {gpa:#x}"),
            Err(fault) => format!("fault \"{fault}\""),
        };
        let what = format!(
            "the walk of {gva:#x} gave {}, expected {}: a page's physical address is the entry's address bits plus the offset bits below the level's shift",
            show(&walk.result),
            show(&result)
        );
        return Err(fail(LAB, TRANSLATE, what));
    }
    Ok(())
}

fn translate_identity(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    let steps = [
        (Level::Pml4, 0, PML4_ADDR, PDPT_ADDR | FLAGS),
        (Level::Pdpt, 0, PDPT_ADDR, PD_ADDR | FLAGS),
        (Level::Pd, 0, PD_ADDR, FLAGS | PTE_PS),
    ];
    for gva in [0x400, 0x1f_ffff] {
        expect_walk(&(ctx.labs.translate)(&memory, PML4_ADDR, gva), gva, &steps, Ok(gva))?;
    }
    Ok(())
}

fn translate_faults(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    let steps = [
        (Level::Pml4, 0, PML4_ADDR, PDPT_ADDR | FLAGS),
        (Level::Pdpt, 0, PDPT_ADDR, PD_ADDR | FLAGS),
        (Level::Pd, 1, PD_ADDR + 8, 0),
    ];
    let beyond = 0x20_0000;
    expect_walk(
        &(ctx.labs.translate)(&memory, PML4_ADDR, beyond),
        beyond,
        &steps,
        Err(WalkFault::NotPresent(Level::Pd)),
    )?;
    let non_canonical = 0x0000_8000_0000_0000;
    expect_walk(
        &(ctx.labs.translate)(&memory, PML4_ADDR, non_canonical),
        non_canonical,
        &[],
        Err(WalkFault::NonCanonical(non_canonical)),
    )
}

fn translate_other_pages(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    let present_rw = PTE_PRESENT | PTE_RW;
    // PML4[1] -> PDPT 0x10000; PDPT[2] -> PD 0x11000; PD[3] -> PT 0x12000; PT[4] -> 0x5000.
    for (addr, entry) in [
        (0x2008, 0x10000),
        (0x10010, 0x11000),
        (0x11018, 0x12000),
        (0x12020, 0x5000),
    ] {
        memory
            .write_obj::<u64>(entry | present_rw, GuestAddress(addr))
            .expect("inside guest memory");
    }
    let gva = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x123;
    let steps = [
        (Level::Pml4, 1, 0x2008, 0x10000 | present_rw),
        (Level::Pdpt, 2, 0x10010, 0x11000 | present_rw),
        (Level::Pd, 3, 0x11018, 0x12000 | present_rw),
        (Level::Pt, 4, 0x12020, 0x5000 | present_rw),
    ];
    expect_walk(&(ctx.labs.translate)(&memory, PML4_ADDR, gva), gva, &steps, Ok(0x5123))?;
    // PDPT[3] with PS maps the 1 GiB page at 1 GiB.
    memory
        .write_obj::<u64>(0x4000_0000 | present_rw | PTE_PS, GuestAddress(0x10018))
        .expect("inside guest memory");
    let gva = (1 << 39) | (3 << 30) | 0x12_3456;
    let steps = [
        (Level::Pml4, 1, 0x2008, 0x10000 | present_rw),
        (Level::Pdpt, 3, 0x10018, 0x4000_0000 | present_rw | PTE_PS),
    ];
    expect_walk(
        &(ctx.labs.translate)(&memory, PML4_ADDR, gva),
        gva,
        &steps,
        Ok(0x4012_3456),
    )
}
