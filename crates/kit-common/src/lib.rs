//! The vocabulary every part of the KVM lab kit shares: CPU modes, the guest's memory layout,
//! `kvm-hello`'s exit statuses and how a lab stub's panic is recognised.

use std::fmt;
use std::str::FromStr;

// ANCHOR: layout
/// Guest physical memory: 2 MiB at guest physical 0, as in kvm-hello-world's `vm_init(0x200000)`.
pub const GUEST_MEMORY_SIZE: usize = 0x20_0000;
/// Where the guest image is loaded and where the vCPU starts (RIP = 0).
pub const GUEST_LOAD_ADDR: u64 = 0;
/// The first byte the VMM reserves: the page tables start here, so an image must end before it.
pub const RESERVED_START: u64 = 0x2000;
/// The largest guest image that fits between the load address and the page tables.
pub const MAX_IMAGE_SIZE: usize = (RESERVED_START - GUEST_LOAD_ADDR) as usize;
/// Where the guest stores its result, 42.
pub const RESULT_ADDR: u64 = 0x400;
/// The value the guest must leave in RAX and at [`RESULT_ADDR`].
pub const EXPECTED_RESULT: u64 = 42;
/// The port the guest writes its console bytes to (Bochs/QEMU's debug port).
pub const CONSOLE_PORT: u16 = 0xE9;
// ANCHOR_END: layout

/// The CPU mode the VMM puts the vCPU in before the first `KVM_RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 16-bit real mode: segment:offset addressing, no paging.
    Real,
    /// 32-bit protected mode, flat segments, no paging.
    Protected,
    /// 32-bit protected mode with paging: one 4 MiB page (CR4.PSE).
    Paged32,
    /// 64-bit long mode with 4-level paging: one 2 MiB page.
    Long,
}

impl Mode {
    /// Every mode, in the order kvm-hello-world defines them.
    pub const ALL: [Mode; 4] = [Mode::Real, Mode::Protected, Mode::Paged32, Mode::Long];

    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Protected => "protected",
            Mode::Paged32 => "paged32",
            Mode::Long => "long",
        }
    }

    /// How many bytes of the result the guest stores at [`RESULT_ADDR`] (its word size).
    pub fn result_width(self) -> usize {
        match self {
            Mode::Real => 2,
            Mode::Protected | Mode::Paged32 => 4,
            Mode::Long => 8,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a mode name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown mode '{}': expected long, protected, paged32 or real",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == s)
            .ok_or_else(|| UnknownMode(s.to_owned()))
    }
}

/// `kvm-hello`'s exit statuses: scripts and the grader rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The guest halted with 42 in RAX and at 0x400.
    Ok = 0,
    /// The guest halted, but RAX or the memory at 0x400 does not hold 42.
    WrongResult = 1,
    /// Bad command line or guest image.
    BadInput = 2,
    /// /dev/kvm is missing, not accessible, or not a usable KVM.
    KvmUnavailable = 3,
    /// The guest faulted or made an exit the VMM does not handle.
    GuestFault = 4,
    /// The guest ran past `--timeout`.
    Timeout = 5,
    /// A lab function is still a `todo!` stub.
    NotImplemented = 6,
    /// Lab code panicked for another reason (a bug in a lab, not in the guest).
    LabPanicked = 7,
    /// A live migration failed; the source ran the guest to its end alone (lab 7).
    MigrationFailed = 8,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// What `todo!` puts in front of its message.
const TODO_PREFIX: &str = "not yet implemented: ";

/// How a panic from lab code reads to a student.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabPanic {
    /// A `todo!` stub: the message names the lab, the function, the file and the book chapter.
    NotImplemented(String),
    /// Any other panic, with its message and where it happened.
    Other(String),
}

impl LabPanic {
    /// Classifies a panic message (as a panic hook or `catch_unwind` sees it).
    pub fn from_message(message: &str, location: Option<&str>) -> LabPanic {
        match message.strip_prefix(TODO_PREFIX) {
            Some(stub) => LabPanic::NotImplemented(stub.to_owned()),
            None if message == "not yet implemented" => {
                LabPanic::NotImplemented(format!("a bare todo at {}", location.unwrap_or("an unknown place")))
            }
            None => match location {
                Some(at) => LabPanic::Other(format!("{message} (at {at})")),
                None => LabPanic::Other(message.to_owned()),
            },
        }
    }
}

impl fmt::Display for LabPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabPanic::NotImplemented(stub) => write!(f, "not implemented yet: {stub}"),
            LabPanic::Other(message) => write!(f, "lab code panicked: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_their_names() {
        for mode in Mode::ALL {
            assert_eq!(mode.name().parse::<Mode>(), Ok(mode));
        }
        assert_eq!("vm86".parse::<Mode>(), Err(UnknownMode("vm86".into())));
    }

    #[test]
    fn result_width_is_the_word_size() {
        assert_eq!(Mode::Real.result_width(), 2);
        assert_eq!(Mode::Protected.result_width(), 4);
        assert_eq!(Mode::Paged32.result_width(), 4);
        assert_eq!(Mode::Long.result_width(), 8);
    }

    #[test]
    fn image_limit_ends_at_the_page_tables() {
        assert_eq!(MAX_IMAGE_SIZE, 0x2000);
    }

    #[test]
    fn todo_panics_are_told_apart_from_bugs() {
        let stub = LabPanic::from_message("not yet implemented: lab1 vm_init (labs/lab1-memory/src/lib.rs)", None);
        assert_eq!(
            stub.to_string(),
            "not implemented yet: lab1 vm_init (labs/lab1-memory/src/lib.rs)"
        );
        let bug = LabPanic::from_message("index out of bounds", Some("labs/lab2-paging/src/lib.rs:40:5"));
        assert_eq!(
            bug.to_string(),
            "lab code panicked: index out of bounds (at labs/lab2-paging/src/lib.rs:40:5)"
        );
    }
}
