//! Lab 2: the page tables and the walk, checked in a fresh guest memory (no KVM).

use lab2_paging::{
    ENTRY_ADDR_MASK, Level, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Group, expect_field, fail};
use crate::walker::{self, RandomTables};
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

/// Judges the lab's walk of `gva` against the grader's walker, naming the first difference.
fn expect_walk(ctx: &Ctx, memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Result<(), String> {
    let expected = walker::walk(memory, cr3, gva);
    let found = (ctx.labs.translate)(memory, cr3, gva);
    match walker::diagnose(cr3, gva, &expected, &found) {
        None => Ok(()),
        Some(cause) => Err(fail(LAB, TRANSLATE, cause)),
    }
}

fn translate_identity(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    let mut rng = ctx.rng();
    let mut addresses = vec![0x400, 0x1f_ffff, rng.range(0, 0x20_0000), rng.range(0, 0x20_0000)];
    rng.shuffle(&mut addresses);
    for gva in addresses {
        expect_walk(ctx, &memory, PML4_ADDR, gva)?;
    }
    Ok(())
}

fn translate_faults(ctx: &Ctx) -> Result<(), String> {
    let memory = identity_map();
    let mut rng = ctx.rng();
    let mut addresses = vec![
        // Past the 2 MiB page: PD[1] and up are not present.
        rng.range(0x20_0000, 0x4000_0000),
        // Past the first GiB: PDPT[1] and up are not present.
        rng.range(0x4000_0000, 1 << 39),
        // Canonical in the upper half: PML4[256..] are not present.
        0xffff_8000_0000_0000 | rng.range(0, 1 << 47),
        // Not canonical, one just past the lower half.
        0x0000_8000_0000_0000 | rng.range(0, 1 << 47),
        rng.range(1, 0xffff) << 48 | rng.range(0, 1 << 47),
        // And addresses that translate: a walk that always faults gains nothing.
        rng.range(0, 0x20_0000),
        rng.range(0, 0x20_0000),
    ];
    rng.shuffle(&mut addresses);
    for gva in addresses {
        expect_walk(ctx, &memory, PML4_ADDR, gva)?;
    }
    Ok(())
}

fn translate_other_pages(ctx: &Ctx) -> Result<(), String> {
    let memory = fresh_memory();
    let mut rng = ctx.rng();
    let tables = RandomTables::build(&memory, &mut rng);
    for gva in tables.addresses {
        expect_walk(ctx, &memory, tables.cr3, gva)?;
    }
    Ok(())
}
