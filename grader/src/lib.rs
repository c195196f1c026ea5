//! The KVM lab kit's grader.
//!
//! Every check is a function in `checks/` that calls one lab's functions (through
//! `kvm_hello::labs::Labs`, so a test can swap in a seeded mistake) and fails with a message that
//! names the lab, the function, the field, expected against found with the bits decoded, and the
//! book chapter. The runner (`runner.rs`) runs each check in its own process (`sandbox.rs`
//! contains it) with a CPU-time limit, in lab order, marks a check "blocked" when a lab it needs
//! has failed and "not run" when this host cannot run it (`host.rs`). Every input a check hands
//! lab code is drawn from a seed (`rng.rs`). `cargo test -p grader` shows the checks as tests;
//! `cargo grade` (`cargo run -p grader`) prints the scoreboard.

pub mod checks;
pub mod describe;
pub mod guestgen;
pub mod host;
pub mod rng;
pub mod rules;
pub mod runner;
pub mod sandbox;
pub mod scoreboard;
pub mod walker;

use std::path::PathBuf;
use std::time::Duration;

pub use kvm_hello::labs::Labs;

/// What a check is given.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The lab functions under test.
    pub labs: Labs,
    /// The program that acts as kvm-hello for end-to-end checks, and the arguments that come
    /// before kvm-hello's own (the grader binary itself with `vmm`).
    pub vmm: (PathBuf, Vec<String>),
    /// The seed of the inputs this check hands to lab code.
    pub seed: u64,
}

impl Ctx {
    /// The labs as built, with `vmm` as the kvm-hello program.
    pub fn built(vmm: (PathBuf, Vec<String>), seed: u64) -> Ctx {
        Ctx {
            labs: Labs::BUILT,
            vmm,
            seed,
        }
    }

    /// The random inputs of this check.
    pub fn rng(&self) -> rng::Rng {
        rng::Rng::new(self.seed)
    }
}

/// What a check needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostNeed {
    /// Nothing: plain values and guest memory in this process.
    Nothing,
    /// A usable /dev/kvm.
    Kvm,
    /// KVM that runs 32-bit paging (not PVM).
    Paged32,
}

/// Which part of the kit a check grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// A lab, by number.
    Lab(u8),
    /// The whole VMM, run as a program.
    EndToEnd,
}

impl Part {
    /// `lab1` … `lab4`, `e2e`: what `cargo grade NAME` selects.
    pub fn key(self) -> String {
        match self {
            Part::Lab(n) => format!("lab{n}"),
            Part::EndToEnd => "e2e".to_owned(),
        }
    }

    /// The heading on the scoreboard.
    pub fn title(self) -> &'static str {
        match self {
            Part::Lab(1) => "Lab 1: Guest memory and the vCPU",
            Part::Lab(2) => "Lab 2: Page tables",
            Part::Lab(3) => "Lab 3: Registers and CPU modes",
            Part::Lab(4) => "Lab 4: The exit loop",
            Part::Lab(0) => "Lab 0 (extension): The LWN warm-up",
            Part::Lab(5) => "Lab 5 (extension): Hypercalls",
            Part::Lab(6) => "Lab 6 (extension): Scheduling two VMs",
            Part::Lab(_) => "Lab",
            Part::EndToEnd => "End to end: kvm-hello",
        }
    }
}

/// One graded check.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Unique name, `labN_…` or `e2e_…`: the test's name under `cargo test -p grader`.
    pub name: &'static str,
    /// What it grades.
    pub part: Part,
    /// One line on the scoreboard.
    pub title: &'static str,
    /// Points when it passes.
    pub points: u32,
    /// Labs that must pass first (a check of theirs failing blocks this one).
    pub needs: &'static [u8],
    /// Whether it runs a guest (a longer time limit).
    pub runs_guest: bool,
    /// What it needs from the host: a check this host cannot run is reported "not run".
    pub host: HostNeed,
    /// The check: `Err` holds the message for the student.
    pub run: fn(&Ctx) -> Result<(), String>,
}

impl Check {
    /// The CPU time its process (and all it starts) may use before it is stopped.
    pub fn time_limit(&self) -> Duration {
        if self.runs_guest {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(10)
        }
    }
}

/// Every check, in the order they run: lab 1 to lab 4, end to end, then the extension labs 0, 5 and 6.
pub fn all_checks() -> Vec<Check> {
    [
        checks::lab1::CHECKS,
        checks::lab2::CHECKS,
        checks::lab3::CHECKS,
        checks::lab4::CHECKS,
        checks::e2e::CHECKS,
        checks::lab0::CHECKS,
        checks::lab5::CHECKS,
        checks::lab6::CHECKS,
    ]
    .concat()
}

/// A check by name.
pub fn find_check(name: &str) -> Option<Check> {
    all_checks().into_iter().find(|check| check.name == name)
}
