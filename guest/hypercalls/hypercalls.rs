//! The hypercall guest of lab 5: asks the host for every service of lab 5's port table, then
//! stores 42 at 0x400 and halts with RAX = 42. Built like the hello guest (see build.rs).
#![no_std]

use core::arch::asm;

const PRINT8_PORT: u16 = 0xE9;
const PRINT32_PORT: u16 = 0xEA;
const NUM_EXITS_PORT: u16 = 0xEB;
const PRINT_STR_PORT: u16 = 0xEC;
const EXITS_BY_TYPE_PORT: u16 = 0xED;
const GVA_TO_HVA_PORT: u16 = 0xEE;
/// An address no page table entry maps: PML4[0] -> PDPT[1] is not present.
const UNMAPPED: u64 = 0x4000_0000;

fn out8(port: u16, value: u8) {
    // SAFETY: port I/O touches no memory of this program; the host serves the exit.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

fn out32(port: u16, value: u32) {
    // SAFETY: as out8; the host may read or write guest memory at the address passed, so no
    // `nomem`: the compiler must not keep that memory in registers across the call.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags)) };
}

fn in32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as out32.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nostack, preserves_flags)) };
    value
}

// ANCHOR: calls
fn print8bit(byte: u8) {
    out8(PRINT8_PORT, byte);
}

fn print32bit(value: u32) {
    out32(PRINT32_PORT, value);
}

fn num_exits() -> u32 {
    in32(NUM_EXITS_PORT)
}

/// `text` ends with a NUL; its address (identity-mapped, below 2 MiB) fits in 4 bytes.
fn print_str(text: &[u8]) {
    out32(PRINT_STR_PORT, text.as_ptr() as u32);
}

fn num_exits_by_type() -> u32 {
    in32(EXITS_BY_TYPE_PORT)
}

fn gva_to_hva(gva: u64) -> u64 {
    let mut slot = gva;
    out32(GVA_TO_HVA_PORT, &raw mut slot as u32);
    // SAFETY: the slot is this stack frame's; the host wrote the answer into it.
    unsafe { (&raw const slot).read_volatile() }
}
// ANCHOR_END: calls

// ANCHOR: program
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.entry")]
pub extern "C" fn _start() -> ! {
    for &byte in b"Hello from the hypercall guest!\n" {
        print8bit(byte);
    }
    print32bit(2048);
    print32bit(4_294_967_295);
    let before = num_exits();
    print_str(b"This line costs one exit.\n\0");
    let after = num_exits();
    print32bit(before);
    print32bit(after);
    let report = num_exits_by_type();
    // SAFETY: the host wrote a NUL-terminated report at this address, inside guest RAM.
    print_str(unsafe { core::slice::from_raw_parts(report as usize as *const u8, 1) });
    gva_to_hva(0x400);
    gva_to_hva(UNMAPPED);
    // SAFETY: 0x400 is guest RAM that holds no code or data of this program (link.ld).
    unsafe { (0x400 as *mut u64).write_volatile(42) };
    loop {
        // SAFETY: HLT stops the vCPU; the host reads RAX when it sees the HLT exit.
        unsafe { asm!("hlt", in("rax") 42u64, options(nomem, nostack)) };
    }
}
// ANCHOR_END: program

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        // SAFETY: halting is all this guest can do on a panic.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
