//! Lab 2: the page tables and the walk.

use serde::{Deserialize, Serialize};

use crate::{Outcome, Request, Words};

/// Build the long-mode tables in fresh, zeroed guest memory; report the CR3 returned and every
/// word the lab wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LongModeTables;

/// Build the paged32 directory in fresh, zeroed guest memory; report as `LongModeTables`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paged32Directory;

/// What a table-building function left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tables {
    /// The CR3 it returned, or its error.
    pub cr3: Outcome<u64>,
    /// Every nonzero word of guest memory afterwards.
    pub memory: Words,
}

impl Request for LongModeTables {
    const NAME: &'static str = "lab2.long_mode_tables";
    type Reply = Tables;
}

impl Request for Paged32Directory {
    const NAME: &'static str = "lab2.paged32_directory";
    type Reply = Tables;
}

/// Write `memory` into fresh, zeroed guest memory, then `translate` each address with `cr3`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Translate {
    /// The words to write first: the judge's tables.
    pub memory: Vec<(u64, u64)>,
    /// The CR3 handed to `translate`.
    pub cr3: u64,
    /// The guest virtual addresses, in this order.
    pub gvas: Vec<u64>,
}

impl Request for Translate {
    const NAME: &'static str = "lab2.translate";
    type Reply = Vec<Walk>;
}

/// The levels of the long-mode page table, from CR3 down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Page map level 4, bits 47..39.
    Pml4,
    /// Page-directory-pointer table, bits 38..30.
    Pdpt,
    /// Page directory, bits 29..21.
    Pd,
    /// Page table, bits 20..12.
    Pt,
}

impl Level {
    /// The levels in the order the MMU walks them.
    pub const WALK: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// The lowest virtual address bit of this level's index.
    pub fn shift(self) -> u32 {
        match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// PML4, PDPT, PD, PT.
    pub fn name(self) -> &'static str {
        match self {
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry the walk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkStep {
    /// The table's level.
    pub level: Level,
    /// The 9-bit index.
    pub index: u64,
    /// The entry's guest physical address.
    pub entry_addr: u64,
    /// The entry's value.
    pub entry: u64,
}

/// Why a walk gave no physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalkFault {
    /// Bits 63..48 do not copy bit 47.
    NonCanonical(u64),
    /// An entry on the way is not present.
    NotPresent(Level),
    /// A table lies outside guest memory.
    TableOutsideMemory {
        /// The level whose entry could not be read.
        level: Level,
        /// The entry's guest physical address.
        addr: u64,
    },
}

/// As the lab's `WalkFault` displays it.
impl std::fmt::Display for WalkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkFault::NonCanonical(gva) => write!(f, "{gva:#x} is not canonical: bits 63..48 must all equal bit 47"),
            WalkFault::NotPresent(level) => write!(f, "the {level} entry is not present"),
            WalkFault::TableOutsideMemory { level, addr } => {
                write!(f, "the {level} entry at {addr:#x} lies outside guest memory")
            }
        }
    }
}

/// A walk as the lab reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk {
    /// The address translated.
    pub gva: u64,
    /// The entries read.
    pub steps: Vec<WalkStep>,
    /// The physical address, or why there is none.
    pub result: Result<u64, WalkFault>,
}
