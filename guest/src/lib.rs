//! The guest images of the KVM lab kit: flat binaries, loaded at guest physical 0 and entered at 0.
//!
//! Each is built from source by `build.rs` (see the `hello64/`, `asm/` and `c/` folders). Every one
//! prints "Hello, world!\n" byte by byte on port 0xE9, stores 42 at 0x400 and halts with 42 in
//! RAX; only the word size differs.

/// The long-mode guest, Rust `#![no_std]` (hello64/hello.rs): stores 8 bytes at 0x400.
pub const HELLO64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello64.bin"));
/// The 32-bit guest for protected and paged32 modes (asm/hello32.S): stores 4 bytes at 0x400.
pub const HELLO32: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello32.bin"));
/// The real-mode guest (asm/hello16.S): stores 2 bytes at 0x400.
pub const HELLO16: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello16.bin"));
/// The assignment's guest.c built by gcc -ffreestanding (c/guest.c): a long-mode image from
/// "elsewhere", to show that kvm-hello runs any flat image.
pub const HELLO64_C: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello64_c.bin"));

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(image: &[u8], needle: &[u8]) -> bool {
        image.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn every_image_is_small_and_carries_the_greeting_or_its_bytes() {
        for image in [HELLO64, HELLO32, HELLO16, HELLO64_C] {
            assert!(
                !image.is_empty() && image.len() <= 0x400,
                "image of {} bytes",
                image.len()
            );
        }
        for image in [HELLO32, HELLO16, HELLO64_C] {
            assert!(contains(image, b"Hello, world!\n"));
        }
    }
}
