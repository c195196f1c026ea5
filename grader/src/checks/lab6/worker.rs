//! The worker guest of lab 6's checks, made for each run: the lab's worker (`guest/schedule`)
//! does fixed work and prints a line per round; this one's work per round, rounds per line and
//! random state are the judge's, and it leaves in memory what the judge reads around each slice:
//! its progress (the rounds done, at `PROGRESS_ADDR`, as the lab's worker), the bytes it has
//! printed and how many times it started from its entry point.
//!
//! In long mode, loaded at 0, from RIP 0 (labs 1 to 3): it reads its name (the byte at
//! `NAME_ADDR`), then forever: `units_per_line` rounds of `iterations` xorshift steps, each round
//! stored at `PROGRESS_ADDR`; then one line, `X 17\n` (its name, a space, the line's number in
//! decimal), one OUT to the console per byte. Its state lives in registers: a VM that does not go
//! on where it stopped starts over.

use crate::facts::schedule::{NAME_ADDR, PROGRESS_ADDR};

/// Where the guest counts the bytes it has printed (u64), one more before each OUT.
pub const PRINTED_ADDR: u64 = 0x510;
/// Where the guest counts its starts from its entry point (u64).
pub const STARTS_ADDR: u64 = 0x518;
/// The end of the buffer the guest writes a line's digits into (backwards).
const DIGITS_END: u32 = 0x620;
/// The console port (the lab's `CONSOLE_PORT`).
pub const CONSOLE: u8 = 0xe9;

/// A worker made for one run.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The flat image.
    pub image: Vec<u8>,
    /// Rounds of work between two lines.
    pub units_per_line: u64,
    /// The lines it prints before it goes on silently (`u32::MAX`: it never stops printing).
    pub lines: u64,
}

fn abs32(addr: u64) -> [u8; 4] {
    u32::try_from(addr)
        .expect("the worker's slots are below 4 GiB")
        .to_le_bytes()
}

/// The worker: `iterations` xorshift steps a round (at least 1), a line every `units_per_line`
/// rounds (at least 1) for its first `lines` lines, then rounds without an exit; `state` is the
/// generator's start.
pub fn worker(state: u64, iterations: u32, units_per_line: u32, lines: u32) -> Worker {
    build(state, iterations, units_per_line, lines, &SILENT_FROM_HERE, 0)
}

/// `mov r15d, u32::MAX`: the worker's lines end here (the next after 2^32 rounds, years away).
const SILENT_FROM_HERE: [u8; 6] = [0x41, 0xbf, 0xff, 0xff, 0xff, 0xff];

/// The worker, which also works `pause` xorshift steps in the middle of each line (after its
/// name and the space): a slice the timer ends then often ends with a line half written. (On
/// PVM the timer's signal ends a slice in the guest's work, seldom in its run of OUTs.)
pub fn worker_pausing_mid_line(state: u64, iterations: u32, units_per_line: u32, pause: u32) -> Worker {
    build(state, iterations, units_per_line, u32::MAX, &SILENT_FROM_HERE, pause)
}

/// How a worker that stops ends: an exit the worker of the lab never causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBy {
    /// HLT (`KVM_EXIT_HLT`).
    Hlt,
    /// IN from the console port (`KVM_EXIT_IO`, in).
    In,
    /// OUT to another port (`KVM_EXIT_IO`, out).
    OutTo(u16),
    /// UD2 with no IDT: a triple fault (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
}

/// A worker that stops after its first `lines` lines with `stop` (then spins, never reached).
pub fn stopping_worker(state: u64, iterations: u32, units_per_line: u32, lines: u32, stop: StopBy) -> Worker {
    let mut block: Vec<u8> = match stop {
        StopBy::Hlt => vec![0xf4],
        // mov dx, CONSOLE; in al, dx
        StopBy::In => vec![0x66, 0xba, CONSOLE, 0, 0xec],
        // mov dx, port; out dx, al
        StopBy::OutTo(port) => {
            let [low, high] = port.to_le_bytes();
            vec![0x66, 0xba, low, high, 0xee]
        }
        StopBy::TripleFault => vec![0x0f, 0x0b],
    };
    // jmp $
    block.extend_from_slice(&[0xeb, 0xfe]);
    build(state, iterations, units_per_line, lines, &block, 0)
}

/// `xorshift`'s steps on r14, `ecx` times (at least once): the worker's work.
const WORK_LOOP: [u8; 34] = [
    0x4c, 0x89, 0xf0, 0x48, 0xc1, 0xe0, 0x0d, 0x49, 0x31, 0xc6, // mov rax, r14; shl rax, 13; xor r14, rax
    0x4c, 0x89, 0xf0, 0x48, 0xc1, 0xe8, 0x07, 0x49, 0x31, 0xc6, // mov rax, r14; shr rax, 7; xor r14, rax
    0x4c, 0x89, 0xf0, 0x48, 0xc1, 0xe0, 0x11, 0x49, 0x31, 0xc6, // mov rax, r14; shl rax, 17; xor r14, rax
    0xff, 0xc9, // dec ecx
    0x75, 0xde, // jnz back to its start (-34)
];

/// The worker, with `after_lines` run once its first `lines` lines are printed, and `pause`
/// steps of work after the name and space of each line (none when 0).
fn build(state: u64, iterations: u32, units_per_line: u32, lines: u32, after_lines: &[u8], pause: u32) -> Worker {
    let iterations = iterations.max(1);
    let units_per_line = units_per_line.max(1);
    let state = if state == 0 { 0x9e37_79b9_7f4a_7c15 } else { state };
    let mut code: Vec<u8> = Vec::new();
    let mut emit = |bytes: &[u8]| code.extend_from_slice(bytes);
    // inc qword [STARTS_ADDR]
    emit(&[0x48, 0xff, 0x04, 0x25]);
    emit(&abs32(STARTS_ADDR));
    // movzx ebx, byte [NAME_ADDR]
    emit(&[0x0f, 0xb6, 0x1c, 0x25]);
    emit(&abs32(NAME_ADDR));
    // xor r12d, r12d (rounds); xor r13d, r13d (lines)
    emit(&[0x45, 0x31, 0xe4, 0x45, 0x31, 0xed]);
    // movabs r14, state
    emit(&[0x49, 0xbe]);
    emit(&state.to_le_bytes());
    let next_line = code.len();
    // mov r15d, units_per_line; cmp r13d, lines; jb unit; after_lines
    code.extend_from_slice(&[0x41, 0xbf]);
    code.extend_from_slice(&units_per_line.to_le_bytes());
    code.extend_from_slice(&[0x41, 0x81, 0xfd]);
    code.extend_from_slice(&lines.to_le_bytes());
    code.extend_from_slice(&[0x72, u8::try_from(after_lines.len()).expect("a short block")]);
    code.extend_from_slice(after_lines);
    let unit = code.len();
    // mov ecx, iterations
    code.push(0xb9);
    code.extend_from_slice(&iterations.to_le_bytes());
    // work: r14 ^= r14 << 13; r14 ^= r14 >> 7; r14 ^= r14 << 17 (through rax); dec ecx; jnz work
    code.extend_from_slice(&WORK_LOOP);
    // inc r12; mov [PROGRESS_ADDR], r12
    code.extend_from_slice(&[0x49, 0xff, 0xc4, 0x4c, 0x89, 0x24, 0x25]);
    code.extend_from_slice(&abs32(PROGRESS_ADDR));
    // dec r15d; jnz unit
    code.extend_from_slice(&[0x41, 0xff, 0xcf, 0x75]);
    code.push(rel8(code.len() + 1, unit));
    // inc r13; mov edx, CONSOLE
    code.extend_from_slice(&[0x49, 0xff, 0xc5, 0xba, CONSOLE, 0, 0, 0]);
    let inc_printed = |code: &mut Vec<u8>| {
        code.extend_from_slice(&[0x48, 0xff, 0x04, 0x25]);
        code.extend_from_slice(&abs32(PRINTED_ADDR));
    };
    // mov eax, ebx; inc [PRINTED]; out dx, al; mov al, ' '; inc [PRINTED]; out dx, al
    code.extend_from_slice(&[0x89, 0xd8]);
    inc_printed(&mut code);
    code.extend_from_slice(&[0xee, 0xb0, b' ']);
    inc_printed(&mut code);
    code.push(0xee);
    if pause > 0 {
        // mov ecx, pause; work (rax and ecx are set again below)
        code.push(0xb9);
        code.extend_from_slice(&pause.to_le_bytes());
        code.extend_from_slice(&WORK_LOOP);
    }
    // mov rax, r13; mov edi, DIGITS_END; mov ecx, 10
    code.extend_from_slice(&[0x4c, 0x89, 0xe8, 0xbf]);
    code.extend_from_slice(&DIGITS_END.to_le_bytes());
    code.extend_from_slice(&[0xb9, 10, 0, 0, 0]);
    // digit: xor edx, edx; div rcx; add dl, '0'; dec edi; mov [rdi], dl; test rax, rax; jnz digit
    let digit = code.len();
    code.extend_from_slice(&[
        0x31, 0xd2, 0x48, 0xf7, 0xf1, 0x80, 0xc2, b'0', 0xff, 0xcf, 0x88, 0x17, 0x48, 0x85, 0xc0, 0x75,
    ]);
    code.push(rel8(code.len() + 1, digit));
    // mov edx, CONSOLE
    code.extend_from_slice(&[0xba, CONSOLE, 0, 0, 0]);
    // print: mov al, [rdi]; inc [PRINTED]; out dx, al; inc edi; cmp edi, DIGITS_END; jne print
    let print = code.len();
    code.extend_from_slice(&[0x8a, 0x07]);
    inc_printed(&mut code);
    code.extend_from_slice(&[0xee, 0xff, 0xc7, 0x81, 0xff]);
    code.extend_from_slice(&DIGITS_END.to_le_bytes());
    code.push(0x75);
    code.push(rel8(code.len() + 1, print));
    // mov al, '\n'; inc [PRINTED]; out dx, al; jmp next_line (rel32)
    code.extend_from_slice(&[0xb0, b'\n']);
    inc_printed(&mut code);
    code.extend_from_slice(&[0xee, 0xe9]);
    let after = code.len() + 4;
    let back = i32::try_from(next_line as i64 - after as i64).expect("a short jump back");
    code.extend_from_slice(&back.to_le_bytes());
    Worker {
        image: code,
        units_per_line: units_per_line.into(),
        lines: lines.into(),
    }
}

/// The rel8 of a jump whose next instruction is at `after`, to `target`.
fn rel8(after: usize, target: usize) -> u8 {
    let offset = target as i64 - after as i64;
    i8::try_from(offset).expect("a short jump") as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_fits_below_its_slots_and_its_jumps_land_on_its_loops() {
        let worker = worker(7, 1000, 3, 5);
        assert!(worker.image.len() < NAME_ADDR as usize, "{} bytes", worker.image.len());
        // The work loop's jnz goes back 34 bytes, to `mov rax, r14` right after `mov ecx, imm32`.
        let jnz = worker
            .image
            .windows(2)
            .position(|w| w == [0x75, 0xde])
            .expect("the work loop's jnz");
        assert_eq!(&worker.image[jnz + 2 - 34..jnz + 2 - 31], &[0x4c, 0x89, 0xf0]);
        assert_eq!(worker.image[jnz + 2 - 39], 0xb9, "mov ecx, iterations before the loop");
    }
}
