//! The probe in the test's own process: the judge's requests go to `grader_probe::answer` with
//! lab functions a test chose (a seeded mistake), so a test needs no second build of the labs.
#![allow(dead_code)]

pub mod causes;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use grader::runner::{Finished, Limits, Outcome, RunError, run_check};
use grader::{Backend, find_check};
use grader_probe::{Labs, Probe};

/// The probe library, called in this process.
pub struct InProcess {
    /// The labs and the VMM program the probe uses.
    pub probe: Probe,
}

impl Backend for InProcess {
    fn exchange(&mut self, input: &[u8], _limits: Limits) -> Result<Finished, RunError> {
        let answer = grader_probe::answer(&self.probe, &String::from_utf8_lossy(input));
        Ok(Finished {
            status: ExitStatus::from_raw(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
            result: serde_json::to_vec(&answer).expect("an answer is plain data"),
        })
    }
}

/// The probe binary built with this test: the VMM of end-to-end requests (`grader-probe vmm`).
pub fn probe_exe() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_grader-probe").into()
}

/// A seed for a test's inputs: fresh, or `GRADER_SEED` to repeat one.
pub fn seed() -> u64 {
    std::env::var("GRADER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(grader::rng::fresh_seed)
}

/// Runs the judge of `check` with its requests answered in this process by `labs`.
pub fn outcome_of(check: &str, labs: Labs, seed: u64) -> Outcome {
    let check = find_check(check).unwrap_or_else(|| panic!("no check {check}"));
    let mut backend = InProcess {
        probe: Probe {
            labs,
            vmm: (probe_exe(), vec![grader_protocol::VMM_ARG.to_owned()]),
        },
    };
    run_check(&mut backend, &check, seed).expect("not interrupted")
}

/// Runs `check` on the reference with one function swapped, asserts that it fails, and returns
/// its message.
pub fn failure_of(check: &str, seed_mistake: impl FnOnce(&mut Labs)) -> String {
    let mut labs = Labs::BUILT;
    seed_mistake(&mut labs);
    let seed = seed();
    match outcome_of(check, labs, seed) {
        Outcome::Failed(message) => message,
        other => panic!("{check}: the seeded mistake was not caught with seed {seed}: {other:?}"),
    }
}
