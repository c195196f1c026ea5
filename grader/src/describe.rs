//! Register and entry values as a student should read them: hex with the bits decoded.

use kvm_bindings::kvm_segment;

use crate::facts::{
    CR0_AM, CR0_CD, CR0_EM, CR0_ET, CR0_MP, CR0_NE, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA,
    EFER_LME, entry_flags,
};

fn bits(value: u64, names: &[(u64, &str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.join("|")
    }
}

/// A page-table entry: `0x87 (P|RW|US|PS)`.
pub fn entry(value: u64) -> String {
    format!("{value:#x} ({})", entry_flags(value))
}

/// CR0: `0x80050033 (PE|MP|ET|NE|WP|AM|PG)`.
pub fn cr0(value: u64) -> String {
    const NAMES: [(u64, &str); 11] = [
        (CR0_PE, "PE"),
        (CR0_MP, "MP"),
        (CR0_EM, "EM"),
        (CR0_TS, "TS"),
        (CR0_ET, "ET"),
        (CR0_NE, "NE"),
        (CR0_WP, "WP"),
        (CR0_AM, "AM"),
        (CR0_NW, "NW"),
        (CR0_CD, "CD"),
        (CR0_PG, "PG"),
    ];
    format!("{value:#x} ({})", bits(value, &NAMES))
}

/// CR4, as far as this kit uses it: `0x20 (PAE)`.
pub fn cr4(value: u64) -> String {
    format!("{value:#x} ({})", bits(value, &[(CR4_PSE, "PSE"), (CR4_PAE, "PAE")]))
}

/// EFER: `0x500 (LME|LMA)`.
pub fn efer(value: u64) -> String {
    format!("{value:#x} ({})", bits(value, &[(EFER_LME, "LME"), (EFER_LMA, "LMA")]))
}

/// A segment's fields that matter here.
pub fn segment(s: &kvm_segment) -> String {
    format!(
        "{{selector {:#x}, base {:#x}, limit {:#x}, type {}, present {}, dpl {}, s {}, l {}, db {}, g {}}}",
        s.selector, s.base, s.limit, s.type_, s.present, s.dpl, s.s, s.l, s.db, s.g
    )
}

/// A plain number in hex.
pub fn hex(value: u64) -> String {
    format!("{value:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_with_their_bits() {
        assert_eq!(entry(0x87), "0x87 (P|RW|US|PS)");
        assert_eq!(entry(0x3), "0x3 (P|RW)");
        assert_eq!(cr0(0x8005_0033), "0x80050033 (PE|MP|ET|NE|WP|AM|PG)");
        assert_eq!(cr4(0x20), "0x20 (PAE)");
        assert_eq!(efer(0x100), "0x100 (LME)");
        assert_eq!(efer(0), "0x0 (none)");
    }
}
