//! # Lab 2: page tables
//!
//! kvm-hello-world's `setup_long_mode` and `setup_paged_32bit_mode` build the guest's page
//! tables; here you build them too, then walk them in software the way the MMU does. You write
//! the three functions marked `TODO(lab2)`; everything else is given. No KVM is needed: the
//! tables live in a `GuestMemoryMmap`. Book: "Lab 2: Page tables".
//!
//! Check your work with `cargo grade lab2`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

use std::fmt;

pub use vm_memory::GuestMemoryMmap;

// ANCHOR: constants
/// Guest physical address of the long-mode PML4 (page map level 4): CR3 points here.
pub const PML4_ADDR: u64 = 0x2000;
/// Guest physical address of the long-mode page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0x3000;
/// Guest physical address of the long-mode page directory.
pub const PD_ADDR: u64 = 0x4000;
/// Guest physical address of the 32-bit page directory (paged32 mode): CR3 points here.
pub const PD32_ADDR: u64 = 0x2000;

/// Entry bit 0, Present: the entry is used; when clear, the MMU ignores every other bit.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Entry bit 1, Read/Write: writes are allowed through this entry.
pub const PTE_RW: u64 = 1 << 1;
/// Entry bit 2, User/Supervisor: ring 3 may use this entry.
pub const PTE_USER: u64 = 1 << 2;
/// Entry bit 7, Page Size: in a PD (or PDPT) entry, the entry maps a 2 MiB (or 1 GiB) page itself
/// instead of pointing at the next table. This bit, not CR4.PAE, makes a page large.
pub const PTE_PS: u64 = 1 << 7;
/// Bits 12..=51 of an entry: the physical address of the next table or of a 4 KiB page. In a
/// large-page entry the address starts at bit 21 (2 MiB) or 30 (1 GiB), bit 12 is PAT; bit 63 is XD.
pub const ENTRY_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
// ANCHOR_END: constants

/// Bytes in one page table (any level): 512 entries of 8 bytes.
pub const TABLE_SIZE: u64 = 4096;
/// Entries in one long-mode table.
pub const ENTRIES_PER_TABLE: u64 = 512;
/// Bytes in one 32-bit page directory: 1024 entries of 4 bytes.
pub const TABLE32_SIZE: u64 = 4096;

/// The levels of the long-mode page table, from CR3 down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Page map level 4, indexed by virtual address bits 47..39.
    Pml4,
    /// Page-directory-pointer table, bits 38..30 (an entry with PS maps a 1 GiB page).
    Pdpt,
    /// Page directory, bits 29..21 (an entry with PS maps a 2 MiB page).
    Pd,
    /// Page table, bits 20..12 (maps a 4 KiB page).
    Pt,
}

impl Level {
    /// The levels in the order the MMU walks them.
    pub const WALK: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// The lowest virtual address bit of this level's 9-bit index.
    pub fn shift(self) -> u32 {
        match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// The usual short name: PML4, PDPT, PD, PT.
    pub fn name(self) -> &'static str {
        match self {
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a page walk: the entry the MMU read at one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStep {
    /// The table's level.
    pub level: Level,
    /// The 9-bit index taken from the virtual address.
    pub index: u64,
    /// Guest physical address of the entry (table base + index * 8).
    pub entry_addr: u64,
    /// The entry's value.
    pub entry: u64,
}

/// Why a walk stopped without a physical address. The CPU raises a page fault for
/// `NotPresent`, but a general-protection fault (#GP) for `NonCanonical`, before any table is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalkFault {
    /// Bits 63..48 are not copies of bit 47.
    #[error("{0:#x} is not canonical: bits 63..48 must all equal bit 47")]
    NonCanonical(u64),
    /// An entry on the way has its Present bit clear.
    #[error("the {0} entry is not present")]
    NotPresent(Level),
    /// A table lies outside guest memory.
    #[error("the {level} entry at {addr:#x} lies outside guest memory")]
    TableOutsideMemory {
        /// The level whose table could not be read.
        level: Level,
        /// The guest physical address of the entry that could not be read.
        addr: u64,
    },
}

/// A complete software page walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The guest virtual address translated.
    pub gva: u64,
    /// The entries read, from the PML4 down to the last one used.
    pub steps: Vec<WalkStep>,
    /// The guest physical address, or why there is none.
    pub result: Result<u64, WalkFault>,
}

/// What can go wrong in lab 2.
#[derive(Debug, thiserror::Error)]
pub enum Lab2Error {
    /// A table could not be written into guest memory.
    #[error("cannot write the page table at {addr:#x}: {source}")]
    WriteTable {
        /// The guest physical address written.
        addr: u64,
        /// vm-memory's reason.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// The flags of a page-table entry by name, e.g. `P|RW|US|PS`, or `-` for none.
pub fn entry_flags(entry: u64) -> String {
    const NAMES: [(u64, &str); 4] = [(PTE_PRESENT, "P"), (PTE_RW, "RW"), (PTE_USER, "US"), (PTE_PS, "PS")];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| entry & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join("|")
    }
}

// ANCHOR: stub_setup_long_mode_page_tables
// TODO(lab2): build the long-mode identity map of kvm-hello-world: PML4[0] -> PDPT, PDPT[0] ->
// PD, and PD[0] mapping one 2 MiB page at physical 0 (PS). Every entry is Present, RW and User;
// every other entry of the three tables is zero. Write through vm-memory (`Bytes::write_obj`).
// Graded (lab2_long_mode_cr3): setup_long_mode_page_tables returns the value for CR3: the PML4's
// guest physical address, PML4_ADDR.
// Graded (lab2_pml4_entry): PML4[0] holds PDPT_ADDR with Present, RW and User set.
// Graded (lab2_pdpt_entry): PDPT[0] holds PD_ADDR with Present, RW and User set.
// Graded (lab2_pd_entry): PD[0] maps one 2 MiB page at guest physical 0: address 0 with Present,
// RW, User and PS set.
// Graded (lab2_nothing_else_mapped): Every other entry of the three long-mode tables is zero, and
// setup_long_mode_page_tables writes no other byte of guest memory.
/// Writes the long-mode page tables into guest memory; returns the value for CR3.
#[cfg(not(feature = "solution"))]
pub fn setup_long_mode_page_tables(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
    let _ = memory;
    todo!("lab2 setup_long_mode_page_tables (labs/lab2-paging/src/lib.rs; book: Lab 2, Page tables)")
}
// ANCHOR_END: stub_setup_long_mode_page_tables

// ANCHOR: stub_setup_paged32_page_directory
// TODO(lab2): build the paged32 page directory: PD32[0] maps one 4 MiB page at physical 0
// (Present, RW, User, PS with CR4.PSE); the other 1023 entries (4 bytes each) are zero.
// Graded (lab2_paged32_directory): setup_paged32_page_directory returns PD32_ADDR and writes
// PD32[0] as a 4-byte entry that maps one 4 MiB page at guest physical 0 (Present, RW, User, PS);
// the other 1023 entries stay zero.
/// Writes the 32-bit page directory into guest memory; returns the value for CR3.
#[cfg(not(feature = "solution"))]
pub fn setup_paged32_page_directory(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
    let _ = memory;
    todo!("lab2 setup_paged32_page_directory (labs/lab2-paging/src/lib.rs; book: Lab 2, Page tables)")
}
// ANCHOR_END: stub_setup_paged32_page_directory

// ANCHOR: stub_translate
// TODO(lab2): walk the long-mode tables from `cr3` as the MMU does: reject a non-canonical
// address; at each level take the 9-bit index at `level.shift()`, read the 8-byte entry,
// record a `WalkStep`, stop at a clear Present bit; a PS entry in the PDPT (1 GiB) or PD
// (2 MiB) maps the page itself, so the low 30 or 21 bits are the offset.
// Graded (lab2_translate_identity): translate walks PML4, PDPT and PD from CR3, records one
// WalkStep per entry it reads (level, index, entry address, entry), and answers the guest physical
// address.
// Graded (lab2_translate_faults): translate answers WalkFault::NonCanonical, reading no table, when
// bits 63..48 of the address are not copies of bit 47, and WalkFault::NotPresent(level) at the
// first entry whose Present bit is clear, after recording that entry's step.
// Graded (lab2_translate_other_pages): translate takes the PML4's address from CR3's bits 12..51
// (CR3's low bits are flags) and each next address from an entry's bits 12..51 (ENTRY_ADDR_MASK:
// flags and NX masked off); PS maps a page only in a PDPT entry (1 GiB) or a PD entry (2 MiB): bit
// 7 of a PML4 entry does not end the walk, and in a PT entry it is PAT; a 1 GiB or 2 MiB page's
// address is the entry's bits 30..51 or 21..51 (its bit 12 is PAT, not an address bit); a table
// outside guest memory is WalkFault::TableOutsideMemory with the level and the entry's address.
/// Translates a guest virtual address through the long-mode page tables at `cr3`.
#[cfg(not(feature = "solution"))]
pub fn translate(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
    let _ = (memory, cr3, gva);
    todo!("lab2 translate (labs/lab2-paging/src/lib.rs; book: Lab 2, Page tables)")
}
// ANCHOR_END: stub_translate

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
