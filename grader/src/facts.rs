//! The documented facts the judge holds its answers against: the assignment's memory layout
//! and the architectural bits of the Intel SDM (Vol. 3A, 2.5 and 4.5). The judge keeps its own
//! copy rather than the labs' constants: it links no lab code.

/// CR3 of the long-mode tables: the PML4's guest physical address.
pub const PML4_ADDR: u64 = 0x2000;
/// The page-directory-pointer table of the identity map.
pub const PDPT_ADDR: u64 = 0x3000;
/// The page directory of the identity map.
pub const PD_ADDR: u64 = 0x4000;
/// CR3 of paged32 mode: the 32-bit page directory.
pub const PD32_ADDR: u64 = 0x2000;

/// Entry bit 0: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Entry bit 1: writable.
pub const PTE_RW: u64 = 1 << 1;
/// Entry bit 2: user.
pub const PTE_USER: u64 = 1 << 2;
/// Entry bit 7: page size (PAT in a PT entry).
pub const PTE_PS: u64 = 1 << 7;
/// Entry bits 12..51: an address.
pub const ENTRY_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// CR0 bits.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP.
pub const CR0_MP: u64 = 1 << 1;
/// CR0.EM.
pub const CR0_EM: u64 = 1 << 2;
/// CR0.TS.
pub const CR0_TS: u64 = 1 << 3;
/// CR0.ET.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.AM.
pub const CR0_AM: u64 = 1 << 18;
/// CR0.NW.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 64-bit entries (needed by long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// The flags of a page-table entry by name, e.g. `P|RW|US|PS`, or `-` for none.
pub fn entry_flags(entry: u64) -> String {
    const NAMES: [(u64, &str); 4] = [(PTE_PRESENT, "P"), (PTE_RW, "RW"), (PTE_USER, "US"), (PTE_PS, "PS")];
    let set: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| entry & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() { "-".to_owned() } else { set.join("|") }
}

/// Lab 5's hypercall ports (the book's table).
pub mod hypercall {
    /// Print the byte in AL.
    pub const PRINT8_PORT: u16 = 0xE9;
    /// Print the 32-bit number in EAX.
    pub const PRINT32_PORT: u16 = 0xEA;
    /// Return the number of exits so far.
    pub const NUM_EXITS_PORT: u16 = 0xEB;
    /// Print the NUL-terminated string at the guest virtual address in EAX.
    pub const PRINT_STR_PORT: u16 = 0xEC;
    /// Write the exit report at `REPORT_ADDR`.
    pub const EXITS_BY_TYPE_PORT: u16 = 0xED;
    /// Translate a guest virtual address to a host virtual one.
    pub const GVA_TO_HVA_PORT: u16 = 0xEE;
    /// Where the exit report goes.
    pub const REPORT_ADDR: u64 = 0x5000;
}

/// Lab 0's guest, LWN's "Using the KVM API" (2015): `mov dx, 0x3f8; add al, bl; add al, '0';
/// out dx, al; mov al, '\n'; out dx, al; hlt`, 16-bit code at guest physical 0x1000.
pub mod lwn {
    /// The code's bytes, as the article lists them.
    pub const CODE: [u8; 12] = [0xba, 0xf8, 0x03, 0x00, 0xd8, 0x04, b'0', 0xee, 0xb0, b'\n', 0xee, 0xf4];
    /// Where the VM's one page, and the code at its start, sit.
    pub const CODE_ADDR: u64 = 0x1000;
    /// The size of that page.
    pub const PAGE_SIZE: u64 = 0x1000;
    /// The serial port the code prints on (COM1).
    pub const SERIAL_PORT: u16 = 0x3f8;
}

/// Lab 3's register values, per mode, as documented: kvm-hello-world (dpw/kvm-hello-world,
/// kvm-hello-world.c: `setup_protected_mode`, `setup_paged_32bit_mode`, `setup_long_mode`,
/// `setup_64bit_code_segment` and the `regs` of each `run_*_mode`) and the Intel SDM. Data, not
/// code: the judge compares each field a lab returns with its row here.
pub mod registers {
    /// The hidden part of a segment register that KVM_SET_SREGS loads (`kvm_segment`'s fields).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Segment {
        /// Selector (SDM Vol. 3A 3.4.2): index << 3, TI = 0, RPL = 0.
        pub selector: u16,
        /// Base address.
        pub base: u64,
        /// Limit, in bytes (KVM takes the byte limit; with G = 1 the low 12 bits are 1s).
        pub limit: u32,
        /// Type (SDM Vol. 3A 3.4.5.1, Table 3-1).
        pub type_: u8,
        /// P.
        pub present: u8,
        /// DPL.
        pub dpl: u8,
        /// S: 1 for a code or data descriptor.
        pub s: u8,
        /// G: limit in 4 KiB units.
        pub g: u8,
        /// L: 64-bit code (SDM Vol. 3A 3.4.5; 5.2.1).
        pub l: u8,
        /// D/B: 32-bit default operand size; must be 0 when L = 1.
        pub db: u8,
    }

    /// kvm-hello-world's 64-bit code segment (`setup_64bit_code_segment`): selector 1 << 3,
    /// base 0, limit 0xffffffff, type 11 (execute/read, accessed), P, DPL 0, S, L, G; D = 0.
    pub const CODE_64: Segment = Segment {
        selector: 0x08,
        base: 0,
        limit: 0xffff_ffff,
        type_: 11,
        present: 1,
        dpl: 0,
        s: 1,
        g: 1,
        l: 1,
        db: 0,
    };
    /// kvm-hello-world's 32-bit code segment (`setup_protected_mode`): as the 64-bit one with
    /// L = 0 and D = 1.
    pub const CODE_32: Segment = Segment {
        selector: 0x08,
        base: 0,
        limit: 0xffff_ffff,
        type_: 11,
        present: 1,
        dpl: 0,
        s: 1,
        g: 1,
        l: 0,
        db: 1,
    };
    /// kvm-hello-world's data segment, in DS, ES, FS, GS and SS in every protected mode:
    /// selector 2 << 3, type 3 (read/write, accessed), D/B = 1, L = 0.
    pub const DATA: Segment = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        type_: 3,
        present: 1,
        dpl: 0,
        s: 1,
        g: 1,
        l: 0,
        db: 1,
    };

    /// CR0 of both paged modes in kvm-hello-world: PE|MP|ET|NE|WP|AM|PG (SDM Vol. 3A 2.5).
    pub const CR0_PAGED: u64 = 0x8005_0033;
    /// CR4 of long mode: PAE, required by IA-32e paging (SDM Vol. 3A 9.8.5).
    pub const CR4_LONG: u64 = 0x20;
    /// EFER of long mode: LME | LMA (SDM Vol. 3A 9.8.5; KVM_SET_SREGS wants LMA with LME and PG).
    pub const EFER_LONG: u64 = 0x500;
    /// CR4 of paged32 mode: PSE, for 4 MiB pages (SDM Vol. 3A 4.3).
    pub const CR4_PAGED32: u64 = 0x10;
    /// EFER of paged32 mode: none.
    pub const EFER_PAGED32: u64 = 0;
    /// The real-mode CS: selector 0 and base 0 (the image is loaded at 0).
    pub const REAL_CS_SELECTOR: u64 = 0;
    /// The real-mode CS base.
    pub const REAL_CS_BASE: u64 = 0;

    /// RIP: the image's first byte, at guest physical 0.
    pub const RIP: u64 = 0;
    /// RFLAGS: bit 1 is reserved and reads 1, every other flag clear (SDM Vol. 1 3.4.3).
    pub const RFLAGS: u64 = 0x2;
    /// RSP in real mode: 0 (SP wraps to 0xfffe on the first push).
    pub const REAL_RSP: u64 = 0;
}

/// Lab 6's worker slots (the book's "Scheduling two VMs": the host writes the VM's name, the
/// guest stores its progress).
pub mod schedule {
    /// The VM's name, one ASCII letter, written by the host before the first run.
    pub const NAME_ADDR: u64 = 0x500;
    /// The guest's progress (u64): the rounds of work it has done.
    pub const PROGRESS_ADDR: u64 = 0x508;
}
