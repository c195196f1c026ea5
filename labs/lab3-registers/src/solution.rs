//! The reference solution of lab 3 (built with `--features solution`).

// ANCHOR: imports
use crate::{
    CODE_SELECTOR, CR0_AM, CR0_ET, CR0_MP, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, DATA_SELECTOR, EFER_LMA,
    EFER_LME, ENTRY_POINT, FLAT_LIMIT, Mode, RFLAGS_RESERVED, SEG_TYPE_CODE, SEG_TYPE_DATA, kvm_regs, kvm_segment,
    kvm_sregs,
};
// ANCHOR_END: imports

// ANCHOR: helpers
/// CR0 of both paged modes: protected mode with paging and the usual FPU and protection bits.
const CR0_PAGED: u64 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
// ANCHOR_END: helpers

// ANCHOR: flat_segment
pub fn flat_segment(mode: Mode, code: bool) -> kvm_segment {
    let long_code = code && mode == Mode::Long;
    kvm_segment {
        base: 0,
        limit: FLAT_LIMIT,
        selector: if code { CODE_SELECTOR } else { DATA_SELECTOR },
        type_: if code { SEG_TYPE_CODE } else { SEG_TYPE_DATA },
        present: 1,
        dpl: 0,
        db: u8::from(!long_code), // 32-bit default size; must be 0 when L = 1
        s: 1,                     // a code or data descriptor, not a system one
        l: u8::from(long_code),   // 64-bit code
        g: 1,                     // limit in 4 KiB units
        ..Default::default()
    }
}
// ANCHOR_END: flat_segment

// ANCHOR: set_flat_segments
fn set_flat_segments(sregs: &mut kvm_sregs, mode: Mode) {
    sregs.cs = flat_segment(mode, true);
    let data = flat_segment(mode, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
}
// ANCHOR_END: set_flat_segments

// ANCHOR: special_registers
pub fn special_registers(mode: Mode, mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    match mode {
        Mode::Real => {
            sregs.cs.selector = 0;
            sregs.cs.base = 0;
        }
        Mode::Protected => {
            sregs.cr0 |= CR0_PE;
            set_flat_segments(&mut sregs, mode);
        }
        Mode::Paged32 => {
            set_flat_segments(&mut sregs, mode);
            sregs.cr3 = cr3;
            sregs.cr4 = CR4_PSE;
            sregs.cr0 = CR0_PAGED;
            sregs.efer = 0;
        }
        Mode::Long => {
            sregs.cr3 = cr3;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PAGED;
            sregs.efer = EFER_LME | EFER_LMA;
            set_flat_segments(&mut sregs, mode);
        }
    }
    sregs
}
// ANCHOR_END: special_registers

// ANCHOR: general_registers
pub fn general_registers(mode: Mode, mem_size: usize) -> kvm_regs {
    kvm_regs {
        rip: ENTRY_POINT,
        rflags: RFLAGS_RESERVED,
        rsp: if mode == Mode::Real { 0 } else { mem_size as u64 },
        ..Default::default()
    }
}
// ANCHOR_END: general_registers

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CR0_EM, CR0_TS};

    #[test]
    fn long_mode_turns_on_pae_paging_and_64_bit_code() {
        let s = special_registers(Mode::Long, kvm_sregs::default(), 0x2000);
        assert_eq!(s.cr0, 0x8005_0033);
        assert_eq!(s.cr0 & (CR0_EM | CR0_TS), 0);
        assert_eq!((s.cr3, s.cr4, s.efer), (0x2000, CR4_PAE, EFER_LME | EFER_LMA));
        assert_eq!(
            (s.cs.l, s.cs.db, s.cs.type_, s.cs.selector, s.cs.s, s.cs.present),
            (1, 0, 11, 8, 1, 1)
        );
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(
                (seg.type_, seg.selector, seg.l, seg.db, seg.base, seg.limit, seg.g),
                (3, 0x10, 0, 1, 0, FLAT_LIMIT, 1)
            );
        }
    }

    #[test]
    fn paged32_uses_pse_and_no_efer() {
        let s = special_registers(
            Mode::Paged32,
            kvm_sregs {
                efer: EFER_LME,
                ..Default::default()
            },
            0x2000,
        );
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x8005_0033, 0x2000, CR4_PSE, 0));
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
    }

    #[test]
    fn protected_mode_only_adds_pe_and_flat_segments() {
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        let s = special_registers(Mode::Protected, reset, 0x2000);
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x6000_0011, 0, 0, 0));
        assert_eq!((s.cs.l, s.cs.db, s.cs.type_, s.ss.type_), (0, 1, 11, 3));
    }

    #[test]
    fn real_mode_moves_cs_to_0_and_nothing_else() {
        let mut reset = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        reset.cs.selector = 0xf000;
        reset.cs.base = 0xffff_0000;
        reset.cs.limit = 0xffff;
        let s = special_registers(Mode::Real, reset, 0x2000);
        assert_eq!(
            (s.cs.selector, s.cs.base, s.cs.limit, s.cr0),
            (0, 0, 0xffff, 0x6000_0010)
        );
    }

    #[test]
    fn general_registers_start_at_0_with_the_stack_on_top() {
        for mode in Mode::ALL {
            let r = general_registers(mode, 0x20_0000);
            assert_eq!((r.rip, r.rflags, r.rax), (0, 2, 0));
            assert_eq!(r.rsp, if mode == Mode::Real { 0 } else { 0x20_0000 });
        }
    }
}
