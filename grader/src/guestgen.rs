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

/// A 64-bit guest for lab 5 made for one run: random print8bit, print32bit and print_str
/// hypercalls (the strings placed after the code), then RAX = 42, 42 at 0x400, HLT.
pub fn hypercalls(rng: &mut crate::rng::Rng) -> Guest {
    use crate::facts::hypercall::{PRINT_STR_PORT, PRINT8_PORT, PRINT32_PORT};
    enum Call {
        Byte(u8),
        Number(u32),
        Text(Vec<u8>),
    }
    let calls: Vec<Call> = (0..rng.range(3, 9))
        .map(|_| match rng.range(0, 3) {
            0 => Call::Byte(rng.range(0x20, 0x7f) as u8),
            1 => Call::Number(rng.next_u64() as u32),
            _ => Call::Text(rng.text_between(1, 40)),
        })
        .collect();
    // Each call is 7 bytes of code: mov eax, imm32 (5) and out imm8, eax or al (2).
    const CALL_LEN: usize = 7;
    let code_len = calls.len() * CALL_LEN + long_mode(b"", 42, 42).image.len();
    let (mut code, mut data, mut output) = (Vec::new(), Vec::new(), Vec::new());
    for call in &calls {
        let (value, port, wide) = match call {
            Call::Byte(b) => {
                output.push(*b);
                (u32::from(*b), PRINT8_PORT, false)
            }
            Call::Number(n) => {
                output.extend_from_slice(format!("{n}\n").as_bytes());
                (*n, PRINT32_PORT, true)
            }
            Call::Text(text) => {
                let at = (code_len + data.len()) as u32;
                data.extend_from_slice(text);
                data.push(0);
                output.extend_from_slice(text);
                (at, PRINT_STR_PORT, true)
            }
        };
        code.push(0xb8); // mov eax, imm32
        code.extend_from_slice(&value.to_le_bytes());
        code.extend_from_slice(&[if wide { 0xe7 } else { OUT_IMM8_AL }, port as u8]);
    }
    code.extend_from_slice(&long_mode(b"", 42, 42).image);
    debug_assert_eq!(code.len(), code_len);
    code.extend_from_slice(&data);
    Guest {
        image: code,
        output,
        exits: calls.len() as u64 + 1,
        rax: 42,
        result: 42,
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
