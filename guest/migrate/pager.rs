//! The guest of lab 7: a long-running, seeded computation over a working set of 128 pages
//! (512 KiB at 1 MiB), written to move while it runs. The host writes its parameters at 0x1000
//! before the first run: the seed (u64), the dirty rate (u64: words written per step, each in a
//! page the generator picks), the number of steps (u64) and the step's length in TSC ticks (u64).
//! Each step does a fixed amount of arithmetic, then its writes, then waits until the step's
//! length has passed on the TSC, so that the guest writes at the same rate on a host that runs it
//! a thousand times faster (PVM against VMX). Every `PRINT_EVERY` steps it prints a progress
//! line, at the end its checksum: a fold of its running value and of every word of the working
//! set, so a page that a migration loses or leaves stale changes it. It stores its progress at
//! 0x1020 and its checksum at 0x1028, and halts with the checksum in RAX. What it prints follows
//! from the seed, the rate and the steps alone (the pacing changes only when): a migrated run
//! prints what an unmigrated one prints. Built like the hello guest (see build.rs).
#![no_std]

use core::arch::asm;

const CONSOLE_PORT: u16 = 0xE9;
/// The parameter block the host writes: seed, dirty rate, steps (three u64).
const SEED_ADDR: usize = 0x1000;
const DIRTY_RATE_ADDR: usize = 0x1008;
const STEPS_ADDR: usize = 0x1010;
const STEP_TSC_ADDR: usize = 0x1018;
/// Where the guest stores the steps done (u64) and, at the end, its checksum (u64).
const PROGRESS_ADDR: usize = 0x1020;
const CHECKSUM_ADDR: usize = 0x1028;
/// The working set: `WORK_PAGES` pages from `WORK_BASE`.
const WORK_BASE: usize = 0x10_0000;
const WORK_PAGES: u64 = 128;
const WORDS_PER_PAGE: u64 = 512;
/// Generator rounds per step: the arithmetic between two steps' writes.
const WORK_PER_STEP: u64 = 20;
/// A progress line every this many steps.
const PRINT_EVERY: u64 = 100;
/// The seed's generator must not start at 0 (xorshift stays there).
const SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

fn out8(value: u8) {
    // SAFETY: port I/O touches no memory of this program; the host serves the exit.
    unsafe { asm!("out dx, al", in("dx") CONSOLE_PORT, in("al") value, options(nomem, nostack, preserves_flags)) };
}

fn print(text: &[u8]) {
    for &byte in text {
        out8(byte);
    }
}

/// 10^19 down to 10^0: every digit position of a u64.
const POWERS_OF_TEN: [u64; 20] = {
    let mut powers = [1u64; 20];
    let mut i = 19;
    while i > 0 {
        powers[i - 1] = powers[i] * 10;
        i -= 1;
    }
    powers
};

/// `value` in decimal, leading zeros skipped. (No digit buffer on the stack: the entry point is
/// reached without a call, so the stack is not aligned as compiled code assumes for SSE stores.)
fn print_decimal(value: u64) {
    let mut started = false;
    for &power in &POWERS_OF_TEN {
        let digit = (value.checked_div(power).unwrap_or(0) % 10) as u8;
        started |= digit != 0 || power == 1;
        if started {
            out8(b'0' + digit);
        }
    }
}

/// `value` as 16 hex digits after `0x`.
fn print_hex(value: u64) {
    print(b"0x");
    for shift in (0..16).rev() {
        let nibble = ((value >> (shift * 4)) & 0xF) as u8;
        out8(if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 });
    }
}

/// The time-stamp counter.
fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: RDTSC reads a counter into EDX:EAX and touches no memory.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// One xorshift64 step.
fn next(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}

/// The address of word `word` of working-set page `page`.
fn word_addr(page: u64, word: u64) -> *mut u64 {
    (WORK_BASE + ((page % WORK_PAGES) * WORDS_PER_PAGE + word % WORDS_PER_PAGE) as usize * 8) as *mut u64
}

fn read_param(addr: usize) -> u64 {
    // SAFETY: identity-mapped guest RAM, written by the host before the first run.
    unsafe { (addr as *const u64).read_volatile() }
}

fn store(addr: usize, value: u64) {
    // SAFETY: identity-mapped guest RAM below 2 MiB, this guest's own slots (the host reads them).
    unsafe { (addr as *mut u64).write_volatile(value) };
}

/// Folds `value` into `sum` (order matters: a swapped or lost word changes the result).
fn fold(sum: u64, value: u64) -> u64 {
    (sum.rotate_left(7) ^ value).wrapping_mul(0x100_0000_01B3)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.entry")]
pub extern "C" fn _start() -> ! {
    let seed = read_param(SEED_ADDR);
    let dirty_rate = read_param(DIRTY_RATE_ADDR);
    let steps = read_param(STEPS_ADDR);
    let step_tsc = read_param(STEP_TSC_ADDR);
    let mut state = next(seed ^ SEED_MIX) | 1;
    // The working set starts as the seed's: every word written once.
    for page in 0..WORK_PAGES {
        for word in 0..WORDS_PER_PAGE {
            state = next(state);
            // SAFETY: identity-mapped guest RAM of the working set (1 MiB to 1.5 MiB), no code there.
            unsafe { word_addr(page, word).write_volatile(state) };
        }
    }
    let mut running = 0u64;
    for step in 1..=steps {
        let started = rdtsc();
        for _ in 0..WORK_PER_STEP {
            state = next(state);
            // SAFETY: an empty asm block that only "uses" `state`: keeps the loop from being folded.
            unsafe { asm!("/* {0} */", inout(reg) state, options(nomem, nostack, preserves_flags)) };
        }
        for _ in 0..dirty_rate {
            state = next(state);
            let at = word_addr(state >> 40, state >> 20);
            // SAFETY: a word of the working set, as above.
            let value = unsafe { at.read_volatile() } ^ state;
            // SAFETY: the same word.
            unsafe { at.write_volatile(value.rotate_left(1)) };
            running = fold(running, value);
        }
        store(PROGRESS_ADDR, step);
        if step % PRINT_EVERY == 0 {
            print(b"step ");
            print_decimal(step);
            print(b" running ");
            print_hex(running);
            out8(b'\n');
        }
        // Wait out the step. A difference, not a deadline: a counter that jumps (a move to a
        // host whose TSC differs) ends one wait early, and the pace goes on from there.
        while rdtsc().wrapping_sub(started) < step_tsc {
            // SAFETY: PAUSE only hints a spin-wait loop; no memory, no state.
            unsafe { asm!("pause", options(nomem, nostack, preserves_flags)) };
        }
    }
    let mut checksum = running;
    for page in 0..WORK_PAGES {
        for word in 0..WORDS_PER_PAGE {
            // SAFETY: a word of the working set, as above.
            checksum = fold(checksum, unsafe { word_addr(page, word).read_volatile() });
        }
    }
    store(CHECKSUM_ADDR, checksum);
    print(b"checksum ");
    print_hex(checksum);
    out8(b'\n');
    loop {
        // SAFETY: HLT stops the vCPU; the host reads the checksum at 0x520 (and RAX).
        unsafe { asm!("hlt", in("rax") checksum, options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        // SAFETY: halts the vCPU; the host sees an HLT exit.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
