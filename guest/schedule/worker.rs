//! The worker guest of lab 6: two copies run side by side, one in each VM. It does steady work
//! and, after each round, stores its progress at 0x508 and prints one line with its own name
//! (the byte the host wrote at 0x500), e.g. "A 17\n", byte by byte on port 0xE9. It never halts:
//! the host's scheduler decides how long it runs. Built like the hello guest (see build.rs).
#![no_std]

use core::arch::asm;

const CONSOLE_PORT: u16 = 0xE9;
/// Where the host writes this VM's name (one ASCII letter).
const NAME_ADDR: usize = 0x500;
/// Where the guest stores its progress: the number of rounds done (u64).
const PROGRESS_ADDR: usize = 0x508;
/// Iterations of the work loop per round (about 700 instructions): well under a microsecond on
/// VMX or SVM, where a round's 6 console exits (a few µs each) dominate; about 1 ms of guest time
/// on the PVM development machine, which runs guest code far slower (book: Lab 6, the worker).
const WORK_PER_ROUND: u64 = 100;

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

fn out8(value: u8) {
    // SAFETY: port I/O touches no memory of this program; the host serves the exit.
    unsafe { asm!("out dx, al", in("dx") CONSOLE_PORT, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// One round of work the compiler cannot fold away: an xorshift generator.
fn work(mut state: u64) -> u64 {
    for _ in 0..WORK_PER_ROUND {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // SAFETY: an empty asm block that only "uses" `state`: keeps the loop from being folded.
        unsafe { asm!("/* {0} */", inout(reg) state, options(nomem, nostack, preserves_flags)) };
    }
    state
}

/// Prints `name`, a space, `value` in decimal and a newline.
fn print_line(name: u8, value: u64) {
    out8(name);
    out8(b' ');
    // The digits from the most significant one, leading zeros skipped (an iterator over a
    // constant table: no bounds check or division by zero for the linker to need).
    let mut started = false;
    for &power in &POWERS_OF_TEN {
        let digit = (value.checked_div(power).unwrap_or(0) % 10) as u8;
        started |= digit != 0 || power == 1;
        if started {
            out8(b'0' + digit);
        }
    }
    out8(b'\n');
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.entry")]
pub extern "C" fn _start() -> ! {
    // SAFETY: identity-mapped guest RAM below 2 MiB, written by the host before the first run.
    let name = unsafe { (NAME_ADDR as *const u8).read_volatile() };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rounds = 0u64;
    loop {
        state = work(state);
        rounds += 1;
        // SAFETY: identity-mapped guest RAM, this guest's own progress slot (the host reads it).
        unsafe { (PROGRESS_ADDR as *mut u64).write_volatile(rounds) };
        print_line(name, rounds);
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        // SAFETY: halts the vCPU; the host sees an HLT exit.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
