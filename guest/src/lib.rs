//! The guest images of the KVM lab kit: flat binaries, loaded at guest physical 0 and entered at 0.
//!
//! Each is built from source by `build.rs` (see the `hello64/`, `asm/` and `c/` folders). Every one
//! prints "Hello, world!\n" byte by byte on port 0xE9, stores 42 at 0x400 and halts with 42 in
//! RAX; only the word size differs.

/// The long-mode guest, Rust `#![no_std]` (hello64/hello.rs): stores 8 bytes at 0x400.
pub const HELLO64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello64.bin"));
/// The hypercall guest of lab 5, Rust `#![no_std]` (hypercalls/hypercalls.rs): long mode.
pub const HYPERCALLS64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hypercalls64.bin"));
/// The worker guest of lab 6, Rust `#![no_std]` (schedule/worker.rs): long mode, never halts;
/// prints "<name> <round>" lines, its name read from 0x500, its progress stored at 0x508.
pub const WORKER64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/worker64.bin"));
/// The migration guest of lab 7, Rust `#![no_std]` (migrate/pager.rs): long mode, a seeded
/// computation over 512 KiB that prints progress lines and its checksum, then halts; its seed,
/// dirty rate, steps and step length (TSC ticks) read from its parameter block at 0x1000.
pub const MIGRATE64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/migrate64.bin"));
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
        for image in [HELLO64, HYPERCALLS64, WORKER64, HELLO32, HELLO16, HELLO64_C] {
            assert!(
                !image.is_empty() && image.len() <= 0x400,
                "image of {} bytes",
                image.len()
            );
        }
        // The migration guest has a page of its own: its parameters start at 0x1000.
        assert!(!MIGRATE64.is_empty() && MIGRATE64.len() <= 0x1000);
        for image in [HELLO32, HELLO16, HELLO64_C] {
            assert!(contains(image, b"Hello, world!\n"));
        }
    }
}

/// A guest of the test corpus (`guest/corpus/*.S`): a hostile or odd guest with its expected
/// outcome in its header (`# mode:`, `# lab:`, `# expect-status:`, `# expect-stdout:`, `# expect-stderr:`).
#[derive(Debug, Clone, Copy)]
pub struct CorpusGuest {
    /// The file stem, e.g. `triple-fault`.
    pub name: &'static str,
    /// The assembly source, header included.
    pub source: &'static str,
    /// The flat image.
    pub image: &'static [u8],
}

impl CorpusGuest {
    /// The value of a `# key:` header line.
    pub fn header(&self, key: &str) -> Option<&'static str> {
        let prefix = format!("# {key}:");
        self.source
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(str::trim)
    }

    /// `kvm-hello --lab` for this guest, if it needs an extension lab's host side.
    pub fn lab(&self) -> Option<&'static str> {
        self.header("lab")
    }

    /// `kvm-hello --mode` for this guest.
    pub fn mode(&self) -> &'static str {
        self.header("mode").unwrap_or("long")
    }

    /// The exit status kvm-hello must end with.
    pub fn expected_status(&self) -> i32 {
        let status = self
            .header("expect-status")
            .unwrap_or_else(|| panic!("{}: no '# expect-status:' line", self.name));
        status
            .parse()
            .unwrap_or_else(|_| panic!("{}: bad expect-status '{status}'", self.name))
    }

    /// The exact stdout expected (with `\n` for newlines), if the header gives one.
    pub fn expected_stdout(&self) -> Option<String> {
        self.header("expect-stdout").map(|text| text.replace("\\n", "\n"))
    }

    /// Text the one-line summary on stderr must contain, if the header gives one.
    pub fn expected_stderr(&self) -> Option<&'static str> {
        self.header("expect-stderr")
    }
}

include!(concat!(env!("OUT_DIR"), "/corpus.rs"));
