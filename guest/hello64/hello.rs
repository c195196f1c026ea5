//! The long-mode guest: says hello through port 0xE9, stores 42 at 0x400, halts with RAX = 42.
//!
//! Built by `guest/build.rs` as a `#![no_std]` object for the host target (static relocation
//! model, panic=abort), linked at guest physical 0 by `link.ld` and flattened with objcopy.
#![no_std]

use core::arch::asm;

/// The console port the VMM listens on.
const CONSOLE_PORT: u16 = 0xE9;
/// Where the VMM looks for the result.
const RESULT_ADDR: *mut u64 = 0x400 as *mut u64;
/// The answer.
const RESULT: u64 = 42;

/// Writes one byte to an I/O port: the `outb` of kvm-hello-world's guest.c.
fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no effect on this program's memory; the VMM handles the exit.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

// ANCHOR: entry
/// The entry point: the VMM starts the vCPU at guest physical 0, where link.ld puts this function.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.entry")]
pub extern "C" fn _start() -> ! {
    for &byte in b"Hello, world!\n" {
        outb(CONSOLE_PORT, byte);
    }
    // SAFETY: 0x400 is guest RAM that holds no code or data of this program (link.ld keeps the
    // image below it), and the page tables map it identically.
    unsafe { RESULT_ADDR.write_volatile(RESULT) };
    loop {
        // SAFETY: HLT stops the vCPU; the VMM reads RAX when it sees the HLT exit.
        unsafe { asm!("hlt", in("rax") RESULT, options(nomem, nostack)) };
    }
}
// ANCHOR_END: entry

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        // SAFETY: halting is all a guest without a console for panics can do.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
