//! Hidden checks: variants of the public checks with inputs a student never sees, run by
//! official grading (`cargo xtask grade-submissions`, the Gradescope package). `cargo xtask
//! student-kit` leaves this file out of the student copy and writes in its place one that holds
//! no check, only `WITHHELD`: how many there are and what they are worth, for the scoreboard.

use super::{lab2, lab5};
use crate::facts::PML4_ADDR;
use crate::walker::{self, RandomTables};
use crate::{Check, Ctx, Stop};

/// How many checks the student copy leaves out, and their points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withheld {
    /// Hidden checks left out.
    pub checks: usize,
    /// Their points.
    pub points: u32,
}

/// Here, in the instructors' repository, nothing is withheld: the hidden checks are below.
pub const WITHHELD: Withheld = Withheld { checks: 0, points: 0 };

/// Each hidden check and the public check whose rule (and hints) it grades with other inputs.
pub const VARIANT_OF: &[(&str, &str)] = &[
    ("lab2_translate_hidden_cr3_flags", "lab2_translate_other_pages"),
    ("lab2_translate_hidden_many_addresses", "lab2_translate_faults"),
    ("lab5_hypercall_guest_hidden_many_calls", "lab5_hypercall_guest"),
];

/// The hidden checks.
pub const CHECKS: &[Check] = &[
    lab2::PURE
        .check(
            "lab2_translate_hidden_cr3_flags",
            "translate ignores CR3's flag bits (PWT, PCD) on random tables",
            2,
            translate_with_cr3_flags,
        )
        .hidden(),
    lab2::PURE
        .check(
            "lab2_translate_hidden_many_addresses",
            "translate: 64 random addresses in and around the identity map",
            2,
            translate_many_addresses,
        )
        .hidden(),
    lab5::GUEST
        .check(
            "lab5_hypercall_guest_hidden_many_calls",
            "a hypercall guest made for this run with 25 to 40 printing calls: its whole output and its exits",
            2,
            hypercall_guest_many_calls,
        )
        .hidden(),
];

/// The random tables with CR3's cache-control bits (PWT, bit 3; PCD, bit 4) set: the walk takes
/// the PML4's address from bits 12..51 only.
fn translate_with_cr3_flags(ctx: &mut Ctx) -> Result<(), Stop> {
    let tables = RandomTables::build(&mut ctx.rng());
    lab2::expect_walks(ctx, tables.memory, tables.cr3 | 0x18, &tables.walks)
}

/// Many more addresses through the identity map, in it and around it.
fn translate_many_addresses(ctx: &mut Ctx) -> Result<(), Stop> {
    let walks = walker::identity_walks(&mut ctx.rng(), 64, true);
    lab2::expect_walks(ctx, walker::identity_map(), PML4_ADDR, &walks)
}

/// A guest made for the run with 25 to 40 printing calls among the others, judged as
/// `lab5_hypercall_guest`.
fn hypercall_guest_many_calls(ctx: &mut Ctx) -> Result<(), Stop> {
    lab5::every_hypercall(ctx, (25, 41))
}
