//! Guests made at grading time: the few x86 instructions a check needs, emitted with a fresh
//! text, length, number of exits and result on every run, so memorised output cannot pass.

use kit_common::{CONSOLE_PORT, RESULT_ADDR};

/// `hlt`.
const HLT: u8 = 0xf4;
/// `mov al, imm8`.
const MOV_AL: u8 = 0xb0;
/// `out imm8, al`.
const OUT_IMM8_AL: u8 = 0xe6;
/// `out dx, al`.
const OUT_DX_AL: u8 = 0xee;

/// A generated guest and what a correct VMM sees when it runs it.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The flat image.
    pub image: Vec<u8>,
    /// The bytes it prints.
    pub output: Vec<u8>,
    /// Exits of a correct run when each OUT is one exit: one per OUT, and the HLT.
    pub exits: u64,
    /// RAX when it halts.
    pub rax: u64,
    /// The value at the result slot when it halts.
    pub result: u64,
}

fn print_bytes(code: &mut Vec<u8>, text: &[u8]) {
    print_to(code, text, CONSOLE_PORT as u8);
}

fn print_to(code: &mut Vec<u8>, text: &[u8], port: u8) {
    for &byte in text {
        code.extend_from_slice(&[MOV_AL, byte, OUT_IMM8_AL, port]);
    }
}

/// A 64-bit guest that prints `text` on the console, then writes one byte to `port` (which
/// nothing serves), then would print `after` and halt with the 42s.
pub fn long_mode_odd_port(text: &[u8], port: u8, after: &[u8]) -> Guest {
    let mut code = Vec::new();
    print_bytes(&mut code, text);
    print_to(&mut code, b"?", port);
    let rest = long_mode(after, 42, 42);
    code.extend_from_slice(&rest.image);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: text.len() as u64 + 1,
        rax: 42,
        result: 42,
    }
}

/// A 64-bit guest: one OUT to 0xE9 per byte of `text`, RAX = `rax`, the 8 bytes at 0x400 =
/// `result`, HLT (both values below 2^31).
pub fn long_mode(text: &[u8], rax: u32, result: u32) -> Guest {
    let mut code = Vec::new();
    print_bytes(&mut code, text);
    // mov rax, imm32 (sign-extended; the value is below 2^31)
    code.extend_from_slice(&[0x48, 0xc7, 0xc0]);
    code.extend_from_slice(&rax.to_le_bytes());
    // mov qword [RESULT_ADDR], imm32
    code.extend_from_slice(&[0x48, 0xc7, 0x04, 0x25]);
    code.extend_from_slice(&(RESULT_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&result.to_le_bytes());
    code.push(HLT);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: text.len() as u64 + 1,
        rax: rax.into(),
        result: result.into(),
    }
}

/// A 16-bit real-mode guest: one OUT to 0xE9 per byte, AX = `ax`, the word at 0x400 = `result`.
pub fn real_mode(text: &[u8], ax: u16, result: u16) -> Guest {
    let mut code = Vec::new();
    print_bytes(&mut code, text);
    code.push(0xb8); // mov ax, imm16
    code.extend_from_slice(&ax.to_le_bytes());
    code.extend_from_slice(&[0xc7, 0x06]); // mov word [disp16], imm16
    code.extend_from_slice(&(RESULT_ADDR as u16).to_le_bytes());
    code.extend_from_slice(&result.to_le_bytes());
    code.push(HLT);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: text.len() as u64 + 1,
        rax: ax.into(),
        result: result.into(),
    }
}

/// A 64-bit guest printing `text` with one `rep outsb` (the number of exits depends on the host).
pub fn long_mode_rep_outsb(text: &[u8]) -> Guest {
    // mov esi, DATA; mov ecx, len; mov dx, 0xE9; rep outsb; mov rax, 42; mov qword [0x400], 42; hlt
    const CODE_LEN: usize = 5 + 5 + 4 + 2 + 7 + 12 + 1;
    let mut code = vec![0xbe];
    code.extend_from_slice(&(CODE_LEN as u32).to_le_bytes());
    code.push(0xb9);
    code.extend_from_slice(&(text.len() as u32).to_le_bytes());
    code.extend_from_slice(&[0x66, 0xba]);
    code.extend_from_slice(&CONSOLE_PORT.to_le_bytes());
    code.extend_from_slice(&[0xf3, 0x6e]);
    let tail = long_mode(b"", 42, 42).image;
    code.extend_from_slice(&tail);
    debug_assert_eq!(code.len(), CODE_LEN);
    code.extend_from_slice(text);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: 0,
        rax: 42,
        result: 42,
    }
}

/// LWN-style real-mode code for lab 0 (loaded at 0x1000): one `out dx, al` to `port` per byte.
pub fn lwn(text: &[u8], port: u16) -> Guest {
    let mut code = vec![0xba]; // mov dx, imm16
    code.extend_from_slice(&port.to_le_bytes());
    for &byte in text {
        code.extend_from_slice(&[MOV_AL, byte, OUT_DX_AL]);
    }
    code.push(HLT);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: text.len() as u64 + 1,
        rax: 0,
        result: 0,
    }
}

/// Real-mode code (at 0) that reads the byte at `probe` into AL, stores `value` at `probe`, and
/// halts: where the vCPU stops tells whether the memory is there, writable and the VMM's.
pub fn probe_memory(probe: u16, value: u8) -> Vec<u8> {
    let [lo, hi] = probe.to_le_bytes();
    vec![
        0xa0, lo, hi, // mov al, [probe]
        0xc6, 0x06, lo, hi, value, // mov byte [probe], value
        HLT,
    ]
}

/// Which hypercall a part of a lab 5 guest's output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// print8bit.
    Print8,
    /// print32bit.
    Print32,
    /// print_str.
    PrintStr,
    /// num_exits, its answer printed with print32bit.
    NumExits,
    /// Two num_exits around one print_str, both answers printed after the second.
    AroundPrintStr,
    /// num_exits just before the HLT: the number of exits of the whole run, but two.
    LastNumExits,
    /// print_str of the address num_exits_by_type answered.
    Report,
    /// The exit report as the guest itself reads it at `REPORT_ADDR`, printed byte by byte.
    ReportInMemory,
    /// gva_to_hva, the slot read back by the guest and printed (low, high half).
    GvaToHva,
}

/// What a part of a lab 5 guest's output must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The slot after gva_to_hva, printed as two print32bit lines (low half, high half): the
    /// host address of guest physical `Some(gpa)` (the host base plus `gpa`), or, for `None`,
    /// "Invalid GVA" and two zeros.
    Hva(Option<u64>),
}

/// One hypercall (or a few) of a lab 5 guest and what it prints.
#[derive(Debug, Clone)]
pub struct Printed {
    /// The call.
    pub kind: CallKind,
    /// The call in words, for a message.
    pub what: String,
    /// What it prints.
    pub expected: Expected,
    /// For print_str: the string's guest physical address and the GVA the guest passed.
    pub string_at: Option<(u64, u64)>,
}

impl Printed {
    /// The bytes it prints when guest memory is at `host_base` in the host.
    pub fn bytes(&self, host_base: u64) -> Vec<u8> {
        match &self.expected {
            Expected::Bytes(bytes) => bytes.clone(),
            Expected::Hva(Some(gpa)) => {
                let hva = host_base.wrapping_add(*gpa);
                format!("{}\n{}\n", hva as u32, hva >> 32).into_bytes()
            }
            Expected::Hva(None) => b"Invalid GVA\n0\n0\n".to_vec(),
        }
    }
}

/// A lab 5 guest made for one run and what a correct host makes of it.
#[derive(Debug, Clone)]
pub struct HypercallGuest {
    /// The flat image.
    pub image: Vec<u8>,
    /// What it prints, call by call.
    pub parts: Vec<Printed>,
    /// Its exits: one per IN and OUT, and the HLT.
    pub exits: u64,
    /// IN exits.
    pub io_in: u64,
    /// OUT exits.
    pub io_out: u64,
    /// The page directory entry the guest adds to the lab's identity map before its first
    /// hypercall: `PD[alias]` maps the first 2 MiB again at `alias << 21`.
    pub alias: u64,
    /// That entry: a 2 MiB page at guest physical 0 with PAT (bit 12) and ignored bits set.
    pub alias_entry: u64,
}

impl HypercallGuest {
    /// Its whole output when guest memory is at `host_base` in the host.
    pub fn output(&self, host_base: u64) -> Vec<u8> {
        self.parts.iter().flat_map(|p| p.bytes(host_base)).collect()
    }
}

/// Which hypercalls a lab 5 guest makes besides the printing ones.
#[derive(Debug, Clone, Copy)]
pub struct HypercallMix {
    /// How many print8bit, print32bit and print_str calls: at least `.0`, fewer than `.1` (at
    /// most 40, so the code stays below the result slot).
    pub prints: (u64, u64),
    /// num_exits: alone, around a print_str, and before the HLT.
    pub exit_counts: bool,
    /// num_exits_by_type, the report printed by print_str and read back by the guest.
    pub report: bool,
    /// gva_to_hva of an address of the identity map, of the alias and of an unmapped one.
    pub translations: bool,
}

/// Bit 12 of a 2 MiB page's entry: PAT.
pub const ALIAS_PAT: u64 = 1 << 12;
/// The bits of a page entry the MMU ignores whatever the guest's control registers: 9..11 and
/// 52..58 (59..62 are protection keys when CR4.PKE is set).
const ALIAS_IGNORED: u64 = 0x07f0_0000_0000_0e00;

/// The page of a lab 5 guest's image above its strings, filled with text and a NUL.
const DECOY_PAGE: u64 = 0x1000;

/// Where a lab 5 guest keeps its strings: past the result slot, below the page tables.
const HYPERCALL_DATA: u64 = 0x800;

/// The code and data of a lab 5 guest as it is written, with the exits it has made so far.
struct HypercallWriter {
    code: Vec<u8>,
    data: Vec<u8>,
    io_in: u64,
    io_out: u64,
    parts: Vec<Printed>,
    alias: u64,
}

impl HypercallWriter {
    fn exits(&self) -> u64 {
        self.io_in + self.io_out
    }

    fn print(&mut self, kind: CallKind, what: String, bytes: Vec<u8>) {
        self.parts.push(Printed {
            kind,
            what,
            expected: Expected::Bytes(bytes),
            string_at: None,
        });
    }

    /// Places a NUL-terminated string; returns its guest physical address.
    fn string(&mut self, text: &[u8]) -> u64 {
        let at = HYPERCALL_DATA + self.data.len() as u64;
        self.data.extend_from_slice(text);
        self.data.push(0);
        at
    }

    fn mov_eax(&mut self, value: u32) {
        self.code.push(0xb8);
        self.code.extend_from_slice(&value.to_le_bytes());
    }

    fn out_eax(&mut self, port: u16) {
        self.code.extend_from_slice(&[0xe7, port as u8]);
        self.io_out += 1;
    }

    fn in_eax(&mut self, port: u16) {
        self.code.extend_from_slice(&[0xe5, port as u8]);
        self.io_in += 1;
    }

    /// `mov rax, imm64; mov [addr], rax`.
    fn store_u64(&mut self, addr: u64, value: u64) {
        self.code.extend_from_slice(&[0x48, 0xb8]);
        self.code.extend_from_slice(&value.to_le_bytes());
        self.code.extend_from_slice(&[0x48, 0x89, 0x04, 0x25]);
        self.code.extend_from_slice(&(addr as u32).to_le_bytes());
    }

    /// The GVA of guest physical `gpa`: itself, or through the alias.
    fn gva_of(&self, gpa: u64, aliased: bool) -> u64 {
        if aliased { (self.alias << 21) | gpa } else { gpa }
    }

    fn print_str(&mut self, text: &[u8], aliased: bool) {
        use crate::facts::hypercall::PRINT_STR_PORT;
        let gpa = self.string(text);
        let gva = self.gva_of(gpa, aliased);
        self.mov_eax(gva as u32);
        self.out_eax(PRINT_STR_PORT);
        let what = format!("print_str of a {}-byte string at GVA {gva:#x}", text.len());
        self.print(CallKind::PrintStr, what, text.to_vec());
        if let Some(part) = self.parts.last_mut() {
            part.string_at = Some((gpa, gva));
        }
    }

    fn num_exits(&mut self, kind: CallKind) {
        use crate::facts::hypercall::{NUM_EXITS_PORT, PRINT32_PORT};
        self.in_eax(NUM_EXITS_PORT);
        let answer = self.exits();
        self.out_eax(PRINT32_PORT);
        let what = format!("num_exits at the guest's exit {answer}, its answer printed with print32bit");
        self.print(kind, what, format!("{answer}\n").into_bytes());
    }

    fn around_print_str(&mut self, text: &[u8], aliased: bool) {
        use crate::facts::hypercall::{NUM_EXITS_PORT, PRINT32_PORT};
        self.in_eax(NUM_EXITS_PORT);
        let before = self.exits();
        self.code.extend_from_slice(&[0x89, 0xc3]); // mov ebx, eax
        self.print_str(text, aliased);
        self.in_eax(NUM_EXITS_PORT);
        let after = self.exits();
        self.code.extend_from_slice(&[0x89, 0xc1, 0x89, 0xd8]); // mov ecx, eax; mov eax, ebx
        self.out_eax(PRINT32_PORT);
        self.code.extend_from_slice(&[0x89, 0xc8]); // mov eax, ecx
        self.out_eax(PRINT32_PORT);
        let what = format!(
            "num_exits at the guest's exits {before} and {after}, around one print_str, both printed with print32bit after"
        );
        self.print(
            CallKind::AroundPrintStr,
            what,
            format!("{before}\n{after}\n").into_bytes(),
        );
    }

    fn report(&mut self) {
        use crate::facts::hypercall::{EXITS_BY_TYPE_PORT, PRINT_STR_PORT, PRINT8_PORT, REPORT_ADDR};
        self.in_eax(EXITS_BY_TYPE_PORT);
        let report = format!("IO in: {}\nIO out: {}\n", self.io_in, self.io_out).into_bytes();
        let at = self.exits();
        self.out_eax(PRINT_STR_PORT);
        let what = format!("print_str(num_exits_by_type()) at the guest's exit {at}");
        self.print(CallKind::Report, what, report.clone());
        // Byte by byte, the NUL included: mov al, [REPORT_ADDR + i]; out PRINT8, al. (Straight
        // code: on the PVM host of the kit's CI a loop of the same instructions misread a byte.)
        let with_nul = [report.as_slice(), &[0]].concat();
        for i in 0..with_nul.len() as u32 {
            self.code.extend_from_slice(&[0x8a, 0x04, 0x25]);
            self.code.extend_from_slice(&(REPORT_ADDR as u32 + i).to_le_bytes());
            self.code.extend_from_slice(&[OUT_IMM8_AL, PRINT8_PORT as u8]);
        }
        self.io_out += with_nul.len() as u64;
        let what = format!(
            "the exit report and its NUL as the guest read them at {REPORT_ADDR:#x} and printed them with print8bit"
        );
        self.print(CallKind::ReportInMemory, what, with_nul);
    }

    /// gva_to_hva of `gva` through a slot at guest physical `slot` (passed by its identity or
    /// alias GVA); `gpa`: where `gva` leads, `None` when it does not translate.
    fn gva_to_hva(&mut self, gva: u64, gpa: Option<u64>, slot: u64, aliased: bool) {
        use crate::facts::hypercall::{GVA_TO_HVA_PORT, PRINT32_PORT};
        self.store_u64(slot, gva);
        let slot_gva = self.gva_of(slot, aliased);
        self.mov_eax(slot_gva as u32);
        self.out_eax(GVA_TO_HVA_PORT);
        // mov rax, [slot]; out PRINT32, eax; shr rax, 32; out PRINT32, eax
        self.code.extend_from_slice(&[0x48, 0x8b, 0x04, 0x25]);
        self.code.extend_from_slice(&(slot as u32).to_le_bytes());
        self.out_eax(PRINT32_PORT);
        self.code.extend_from_slice(&[0x48, 0xc1, 0xe8, 0x20]);
        self.out_eax(PRINT32_PORT);
        let leads = match gpa {
            Some(gpa) => format!("guest physical {gpa:#x}"),
            None => "no page".to_owned(),
        };
        self.parts.push(Printed {
            kind: CallKind::GvaToHva,
            what: format!(
                "gva_to_hva of GVA {gva:#x} (which leads to {leads}) through the slot at GVA {slot_gva:#x}, the slot then printed by the guest with print32bit (low half, high half)"
            ),
            expected: Expected::Hva(gpa),
            string_at: None,
        });
    }
}

/// Where a lab 5 guest puts a string across two pages: `PD[pd]` points at its own page table
/// at `pt`, whose entries `index` and `index + 1` map two pages that are not adjacent in guest
/// physical memory, `first` and `second` (the second below the first at times).
struct SplitPages {
    pd: u64,
    pt: u64,
    index: u64,
    first: u64,
    second: u64,
}

impl SplitPages {
    /// Pages in 1 MiB..1.9 MiB, apart from each other; a PD index other than the alias's.
    fn pick(rng: &mut crate::rng::Rng, alias: u64) -> SplitPages {
        let pd = loop {
            let pd = rng.range(1, 512);
            if pd != alias {
                break pd;
            }
        };
        let mut pages: Vec<u64> = (0x100..0x1e0).map(|p| p * 0x1000).collect();
        rng.shuffle(&mut pages);
        let pt = pages[0];
        let first = pages[1];
        let second = *pages[2..]
            .iter()
            .find(|&&page| page.abs_diff(first) > 0x1000)
            .expect("a page apart from the first");
        SplitPages {
            pd,
            pt,
            index: rng.range(0, 511),
            first,
            second,
        }
    }

    /// Whether guest physical `addr` lies on one of its pages.
    fn holds(&self, addr: u64) -> bool {
        [self.pt, self.first, self.second].contains(&(addr & !0xfff))
    }

    /// The GVA of the first page.
    fn gva(&self) -> u64 {
        (self.pd << 21) | (self.index << 12)
    }
}

impl HypercallWriter {
    /// `mov esi, src; mov edi, dst; mov ecx, len; rep movsb`.
    fn copy(&mut self, src: u64, dst: u64, len: usize) {
        self.code.push(0xbe);
        self.code.extend_from_slice(&(src as u32).to_le_bytes());
        self.code.push(0xbf);
        self.code.extend_from_slice(&(dst as u32).to_le_bytes());
        self.code.push(0xb9);
        self.code.extend_from_slice(&(len as u32).to_le_bytes());
        self.code.extend_from_slice(&[0xf3, 0xa4]);
    }

    /// Maps `split`'s two pages, copies `text` (and its NUL) so that its first `before` bytes end
    /// the first page and the rest begins the second, and prints it with print_str.
    fn split_print_str(&mut self, split: &SplitPages, text: &[u8], before: u64) {
        use crate::facts::hypercall::PRINT_STR_PORT;
        use crate::facts::{PD_ADDR, PTE_PRESENT, PTE_RW, PTE_USER};
        let flags = PTE_PRESENT | PTE_RW | PTE_USER;
        self.store_u64(PD_ADDR + split.pd * 8, split.pt | flags);
        self.store_u64(split.pt + split.index * 8, split.first | flags);
        self.store_u64(split.pt + (split.index + 1) * 8, split.second | flags);
        let src = self.string(text);
        self.copy(src, split.first + 0x1000 - before, before as usize);
        self.copy(src + before, split.second, text.len() + 1 - before as usize);
        let gva = split.gva() + 0x1000 - before;
        self.mov_eax(gva as u32);
        self.out_eax(PRINT_STR_PORT);
        let what = format!(
            "print_str of a {}-byte string at GVA {gva:#x}, across a page boundary: its first {before} bytes end the page mapped to guest physical {:#x}, the rest begins the next virtual page, mapped to guest physical {:#x}, not adjacent",
            text.len(),
            split.first,
            split.second
        );
        self.print(CallKind::PrintStr, what, text.to_vec());
    }
}

/// A 64-bit guest for lab 5 made for one run: it maps its first 2 MiB a second time (a page
/// directory entry of its own beside the lab's identity map), then makes random print8bit,
/// print32bit and print_str hypercalls (strings through either mapping, one across two pages
/// that are not adjacent in guest physical memory, numbers at the edges of a u32 at times) and, as `mix` says,
/// num_exits, num_exits_by_type and gva_to_hva calls whose answers it prints, in random order;
/// then RAX = 42, 42 at 0x400, HLT.
pub fn hypercalls(rng: &mut crate::rng::Rng, mix: HypercallMix) -> HypercallGuest {
    use crate::facts::PD_ADDR;
    use crate::facts::hypercall::{PRINT8_PORT, PRINT32_PORT};
    #[derive(Clone, Copy)]
    enum Call {
        Byte,
        Number,
        Text,
        NumExits,
        Around,
        Report,
        Translate(u8),
        Split,
    }
    let mut calls: Vec<Call> = (0..rng.range(mix.prints.0, mix.prints.1.min(41)))
        .map(|_| *rng.pick(&[Call::Byte, Call::Number, Call::Text]))
        .collect();
    // One string across two pages that are not adjacent in guest physical memory.
    calls.push(Call::Split);
    if mix.exit_counts {
        calls.extend((0..rng.range(1, 3)).map(|_| Call::NumExits));
        calls.push(Call::Around);
    }
    if mix.report {
        calls.push(Call::Report);
    }
    if mix.translations {
        calls.extend([Call::Translate(0), Call::Translate(1), Call::Translate(2)]);
    }
    rng.shuffle(&mut calls);
    let mut guest = HypercallWriter {
        code: Vec::new(),
        data: Vec::new(),
        io_in: 0,
        io_out: 0,
        parts: Vec::new(),
        alias: rng.range(1, 512),
    };
    // PD[alias] = a 2 MiB page at guest physical 0: present, writable, user, PS, with PAT (bit
    // 12: its memory type stays write-back under the reset PAT MSR) and ignored bits (9..11,
    // 52..58) that a host's walk must leave out of the address. Not NX: without EFER.NXE, bit 63
    // is reserved and the guest would fault.
    let ignored = (rng.next_u64() & ALIAS_IGNORED) | 1 << rng.range(52, 59);
    let alias_entry = 0x87 | ALIAS_PAT | ignored;
    guest.store_u64(PD_ADDR + guest.alias * 8, alias_entry);
    let split = SplitPages::pick(rng, guest.alias);
    // Slots for gva_to_hva: above the report's page, below the stack, off the split's pages.
    let slot = |rng: &mut crate::rng::Rng| loop {
        let slot = rng.range(0x6000 / 8, 0x1f_0000 / 8) * 8;
        if !split.holds(slot) {
            break slot;
        }
    };
    for call in calls {
        match call {
            Call::Byte => {
                let byte = rng.range(0x20, 0x7f) as u8;
                guest.mov_eax(byte.into());
                guest.code.extend_from_slice(&[OUT_IMM8_AL, PRINT8_PORT as u8]);
                guest.io_out += 1;
                guest.print(CallKind::Print8, format!("print8bit({:?})", byte as char), vec![byte]);
            }
            Call::Number => {
                // At times the edges of a u32: 0, the largest, the sign bit.
                let value = match rng.range(0, 6) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 0x8000_0000 | rng.range(0, 0x100) as u32,
                    _ => rng.next_u64() as u32,
                };
                guest.mov_eax(value);
                guest.out_eax(PRINT32_PORT);
                guest.print(
                    CallKind::Print32,
                    format!("print32bit({value})"),
                    format!("{value}\n").into_bytes(),
                );
            }
            Call::Text => {
                let (text, aliased) = (rng.text_between(1, 40), rng.chance(50));
                guest.print_str(&text, aliased);
            }
            Call::Split => {
                let text = rng.text_between(2, 40);
                let before = rng.range(1, text.len() as u64);
                guest.split_print_str(&split, &text, before);
            }
            Call::NumExits => guest.num_exits(CallKind::NumExits),
            Call::Around => {
                // Through the alias: a print_str that takes the GVA for a GPA shows here.
                let text = rng.text_between(1, 40);
                guest.around_print_str(&text, true);
            }
            Call::Report => guest.report(),
            Call::Translate(case) => {
                let at = rng.range(0, 0x20_0000);
                let (gva, gpa) = match case {
                    0 => (at, Some(at)),
                    // Bit 12 clear: a host walk that keeps the alias entry's PAT bit shows.
                    1 => ((guest.alias << 21) | (at & !ALIAS_PAT), Some(at & !ALIAS_PAT)),
                    _ => {
                        // A PD entry the tables leave empty, or past the first GiB.
                        let pd = loop {
                            let pd = rng.range(1, 512);
                            if pd != guest.alias && pd != split.pd {
                                break pd;
                            }
                        };
                        let gva = if rng.chance(50) {
                            (pd << 21) | at
                        } else {
                            (rng.range(1, 1 << 17) << 30) | at
                        };
                        (gva, None)
                    }
                };
                let aliased = rng.chance(50);
                guest.gva_to_hva(gva, gpa, slot(rng), aliased);
            }
        }
    }
    if mix.exit_counts {
        guest.num_exits(CallKind::LastNumExits);
    }
    guest.code.extend_from_slice(&long_mode(b"", 42, 42).image);
    assert!(
        guest.code.len() < RESULT_ADDR as usize,
        "the code stays below the result slot"
    );
    let mut image = guest.code;
    image.resize(HYPERCALL_DATA as usize, 0);
    image.extend_from_slice(&guest.data);
    assert!(image.len() <= DECOY_PAGE as usize, "the strings stay in the first page");
    // The page above the strings holds text too: a host walk that keeps the alias entry's PAT
    // bit (bit 12) reads there, and prints text the judge can point at.
    image.resize(DECOY_PAGE as usize, 0);
    image.extend((DECOY_PAGE..kit_common::RESERVED_START - 1).map(|_| rng.range(0x21, 0x7f) as u8));
    image.push(0);
    assert!(
        image.len() <= kit_common::MAX_IMAGE_SIZE,
        "the image fits below the page tables"
    );
    HypercallGuest {
        image,
        parts: guest.parts,
        exits: guest.io_in + guest.io_out + 1,
        io_in: guest.io_in,
        io_out: guest.io_out,
        alias: guest.alias,
        alias_entry,
    }
}

// ---- guests of lab 4 and the end-to-end checks: every mode, random text and results ----

/// The mask of a mode's word: what the guest's `mov` sets of RAX and writes at the result slot.
pub fn word_mask(mode: kit_common::Mode) -> u64 {
    match mode.result_width() {
        8 => u64::MAX,
        width => (1u64 << (8 * width)) - 1,
    }
}

/// A guest for `mode` that prints `text` (one `out 0xE9, al` per byte), stores `result` at 0x400
/// as the mode's word and `junk` in the rest of the 8 bytes from 0x400 (so a read of the wrong
/// width shows), leaves `rax` in RAX (AX, EAX: the mode's word), and halts. Values are cut to
/// the mode's word; the image is code only (well below 0x400 for texts under 200 bytes).
pub fn returning(mode: kit_common::Mode, text: &[u8], rax: u64, result: u64, junk: u64) -> Guest {
    use kit_common::Mode;
    let mask = word_mask(mode);
    let (rax, result) = (rax & mask, result & mask);
    let slot = RESULT_ADDR as u32;
    let mut code = Vec::new();
    print_bytes(&mut code, text);
    match mode {
        Mode::Real => {
            for (i, word) in [result, junk, junk >> 16, junk >> 32].into_iter().enumerate() {
                // mov word [disp16], imm16
                code.extend_from_slice(&[0xc7, 0x06]);
                code.extend_from_slice(&((slot + 2 * i as u32) as u16).to_le_bytes());
                code.extend_from_slice(&(word as u16).to_le_bytes());
            }
            code.push(0xb8); // mov ax, imm16
            code.extend_from_slice(&(rax as u16).to_le_bytes());
        }
        Mode::Protected | Mode::Paged32 => {
            for (i, word) in [result, junk].into_iter().enumerate() {
                // mov dword [disp32], imm32
                code.extend_from_slice(&[0xc7, 0x05]);
                code.extend_from_slice(&(slot + 4 * i as u32).to_le_bytes());
                code.extend_from_slice(&(word as u32).to_le_bytes());
            }
            code.push(0xb8); // mov eax, imm32
            code.extend_from_slice(&(rax as u32).to_le_bytes());
        }
        Mode::Long => {
            code.extend_from_slice(&[0x48, 0xb9]); // mov rcx, imm64
            code.extend_from_slice(&result.to_le_bytes());
            code.extend_from_slice(&[0x48, 0x89, 0x0c, 0x25]); // mov [disp32], rcx
            code.extend_from_slice(&slot.to_le_bytes());
            code.extend_from_slice(&[0x48, 0xb8]); // mov rax, imm64
            code.extend_from_slice(&rax.to_le_bytes());
        }
    }
    code.push(HLT);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: text.len() as u64 + 1,
        rax,
        result,
    }
}

/// A 64-bit guest that prints `first`, halts with `rax` and `result` (as `returning`), and
/// after that HLT would print `then` and halt again with the 42s, then spin: a loop that goes
/// on after the first HLT prints `then`.
pub fn long_mode_halt_then_print(first: &[u8], rax: u64, result: u64, then: &[u8]) -> Guest {
    let mut guest = returning(kit_common::Mode::Long, first, rax, result, 0);
    let rest = returning(kit_common::Mode::Long, then, 42, 42, 0);
    guest.image.extend_from_slice(&rest.image);
    guest.image.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    guest
}

/// A 64-bit guest that prints `text`, then writes one byte to the 16-bit `port` with `out dx,
/// al` (nothing serves it), then would print `after` and halt with the 42s.
pub fn long_mode_odd_port_dx(text: &[u8], port: u16, after: &[u8]) -> Guest {
    let mut code = Vec::new();
    print_bytes(&mut code, text);
    code.extend_from_slice(&[0x66, 0xba]); // mov dx, imm16
    code.extend_from_slice(&port.to_le_bytes());
    code.extend_from_slice(&[MOV_AL, b'?', OUT_DX_AL]);
    code.extend_from_slice(&long_mode(after, 42, 42).image);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: text.len() as u64 + 1,
        rax: 42,
        result: 42,
    }
}

/// A 64-bit guest that prints `text` with OUTs of 4, 2 and 1 bytes (`out 0xE9, eax`, `ax`,
/// `al`; the widths drawn by `widths`, each OUT one exit), then halts with the 42s.
pub fn long_mode_wide_outs(text: &[u8], widths: &mut impl FnMut() -> usize) -> Guest {
    let port = CONSOLE_PORT as u8;
    let (mut code, mut outs, mut at) = (Vec::new(), 0u64, 0);
    while at < text.len() {
        let width = [4, 2, 1]
            .into_iter()
            .find(|&w| w <= widths() && at + w <= text.len())
            .unwrap_or(1);
        let chunk = &text[at..at + width];
        match width {
            4 => {
                code.push(0xb8); // mov eax, imm32
                code.extend_from_slice(chunk);
                code.extend_from_slice(&[0xe7, port]); // out imm8, eax
            }
            2 => {
                code.extend_from_slice(&[0x66, 0xb8]); // mov ax, imm16
                code.extend_from_slice(chunk);
                code.extend_from_slice(&[0x66, 0xe7, port]); // out imm8, ax
            }
            _ => code.extend_from_slice(&[MOV_AL, chunk[0], OUT_IMM8_AL, port]),
        }
        outs += 1;
        at += width;
    }
    code.extend_from_slice(&long_mode(b"", 42, 42).image);
    Guest {
        image: code,
        output: text.to_vec(),
        exits: outs + 1,
        rax: 42,
        result: 42,
    }
}
