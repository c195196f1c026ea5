//! Lab 2: the page tables and the walk, checked in a fresh guest memory (no KVM). The probe
//! builds the lab's tables and reports every word written, and walks the judge's tables with the
//! lab's `translate`; the judge knows each walk from how it built the tables (`walker`).

use grader_protocol::Words;
use grader_protocol::lab2::{Level, LongModeTables, Paged32Directory, Tables, Translate, Walk};

use super::{Group, expect_field, fail};
use crate::facts::{ENTRY_ADDR_MASK, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER};
use crate::walker::{self, RandomTables};
use crate::{Check, Ctx, Part, Stop, describe};

const LAB: u8 = 2;
/// Lab 2's checks need no KVM and no other lab.
pub(super) const PURE: Group = Group {
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
        "translate stops at a clear P bit and at non-canonical addresses",
        2,
        translate_faults,
    ),
    PURE.check(
        "lab2_translate_other_pages",
        "translate follows random tables: 4 KiB, 2 MiB, 1 GiB pages, holes",
        2,
        translate_other_pages,
    ),
];

/// The lab's long-mode tables: the CR3 it returned and the words it wrote.
fn built_long_tables(ctx: &mut Ctx) -> Result<(Words, u64), Stop> {
    let Tables { cr3, memory } = ctx.call(&LongModeTables)?;
    let cr3 = cr3.map_err(|err| fail(LAB, LONG, err))?;
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

fn long_mode_cr3(ctx: &mut Ctx) -> Result<(), Stop> {
    let (_, cr3) = built_long_tables(ctx)?;
    expect_field(
        LAB,
        LONG,
        "the returned CR3",
        cr3,
        PML4_ADDR,
        describe::hex,
        "CR3 holds the PML4's guest physical address",
    )?;
    Ok(())
}

fn pml4_entry(ctx: &mut Ctx) -> Result<(), Stop> {
    let (memory, _) = built_long_tables(ctx)?;
    expect_entry(LONG, Level::Pml4, 0, memory.at(PML4_ADDR), PDPT_ADDR | FLAGS)?;
    Ok(())
}

fn pdpt_entry(ctx: &mut Ctx) -> Result<(), Stop> {
    let (memory, _) = built_long_tables(ctx)?;
    expect_entry(LONG, Level::Pdpt, 0, memory.at(PDPT_ADDR), PD_ADDR | FLAGS)?;
    Ok(())
}

fn pd_entry(ctx: &mut Ctx) -> Result<(), Stop> {
    let (memory, _) = built_long_tables(ctx)?;
    expect_entry(LONG, Level::Pd, 0, memory.at(PD_ADDR), FLAGS | PTE_PS)?;
    Ok(())
}

fn nothing_else_mapped(ctx: &mut Ctx) -> Result<(), Stop> {
    let (memory, _) = built_long_tables(ctx)?;
    let first_entries = [PML4_ADDR, PDPT_ADDR, PD_ADDR];
    // Tables that map nothing map nothing else either: this check counts once the three are there.
    if first_entries.iter().any(|&addr| memory.at(addr) & PTE_PRESENT == 0) {
        let what = "the identity map's three entries are not all present (see lab2_pml4_entry, lab2_pdpt_entry and lab2_pd_entry): no other entry is judged before they are";
        return Err(fail(LAB, LONG, what).into());
    }
    for (level, table) in [(Level::Pml4, PML4_ADDR), (Level::Pdpt, PDPT_ADDR), (Level::Pd, PD_ADDR)] {
        for index in 1..512 {
            let entry = memory.at(table + index * 8);
            if entry != 0 {
                let what = format!(
                    "{}[{index}] = {}, expected 0: only entry 0 of each table is used; any other entry maps memory the guest does not have",
                    level.name(),
                    describe::entry(entry)
                );
                return Err(fail(LAB, LONG, what).into());
            }
        }
    }
    if let Some(&(addr, _)) = memory.words.iter().find(|(addr, _)| !first_entries.contains(addr)) {
        let what = format!(
            "wrote to guest physical {addr:#x}, outside the three entries: the tables must not touch other memory"
        );
        return Err(fail(LAB, LONG, what).into());
    }
    Ok(())
}

fn paged32_directory(ctx: &mut Ctx) -> Result<(), Stop> {
    let Tables { cr3, memory } = ctx.call(&Paged32Directory)?;
    let cr3 = cr3.map_err(|err| fail(LAB, PAGED32, err))?;
    expect_field(
        LAB,
        PAGED32,
        "the returned CR3",
        cr3,
        PD32_ADDR,
        describe::hex,
        "CR3 holds the page directory's address",
    )?;
    // Entries are 4 bytes: the words the probe reports hold two of them each.
    let entry32 = |index: u64| {
        let addr = PD32_ADDR + index * 4;
        (memory.at(addr & !7) >> ((addr & 4) * 8)) as u32
    };
    let pde = entry32(0);
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
        let entry = entry32(index);
        if entry != 0 {
            let what = format!(
                "PD32[{index}] = {}, expected 0: entries are 4 bytes; only entry 0 is used",
                describe::entry(entry.into())
            );
            return Err(fail(LAB, PAGED32, what).into());
        }
    }
    Ok(())
}

/// Has the lab walk `walks`' addresses through the tables in `memory` and judges each walk
/// against the recorded one, naming the first difference.
fn expect_walks(ctx: &mut Ctx, memory: Vec<(u64, u64)>, cr3: u64, walks: &[Walk]) -> Result<(), Stop> {
    let gvas = walks.iter().map(|walk| walk.gva).collect();
    let found = ctx.call(&Translate { memory, cr3, gvas })?;
    if found.len() != walks.len() {
        return Err(Stop::Failed(format!(
            "the probe reported {} walks for {} addresses: lab code must not write on descriptor 3",
            found.len(),
            walks.len()
        )));
    }
    for (expected, found) in walks.iter().zip(&found) {
        if let Some(cause) = walker::diagnose(cr3, expected.gva, expected, found) {
            return Err(fail(LAB, TRANSLATE, cause).into());
        }
    }
    Ok(())
}

fn translate_identity(ctx: &mut Ctx) -> Result<(), Stop> {
    let walks = walker::identity_walks(&mut ctx.rng(), 2, false);
    expect_walks(ctx, walker::identity_map(), PML4_ADDR, &walks)
}

fn translate_faults(ctx: &mut Ctx) -> Result<(), Stop> {
    // Addresses that translate too: a walk that always faults gains nothing.
    let walks = walker::identity_walks(&mut ctx.rng(), 2, true);
    expect_walks(ctx, walker::identity_map(), PML4_ADDR, &walks)
}

fn translate_other_pages(ctx: &mut Ctx) -> Result<(), Stop> {
    let tables = RandomTables::build(&mut ctx.rng());
    expect_walks(ctx, tables.memory, tables.cr3, &tables.walks)
}

/// Hidden: the random tables with CR3's cache-control bits (PWT, bit 3; PCD, bit 4) set: the
/// walk takes the PML4's address from bits 12..51 only.
pub(super) fn translate_with_cr3_flags(ctx: &mut Ctx) -> Result<(), Stop> {
    let tables = RandomTables::build(&mut ctx.rng());
    expect_walks(ctx, tables.memory, tables.cr3 | 0x18, &tables.walks)
}

/// Hidden: many more addresses through the identity map, in it and around it.
pub(super) fn translate_many_addresses(ctx: &mut Ctx) -> Result<(), Stop> {
    let walks = walker::identity_walks(&mut ctx.rng(), 64, true);
    expect_walks(ctx, walker::identity_map(), PML4_ADDR, &walks)
}
