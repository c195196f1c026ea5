//! The KVM lab kit's grader: the judge.
//!
//! Every check is split in two. The judge (this crate, the `grader` binary) draws the check's
//! inputs from a seed, knows the right answers from how it built them, and writes the message: it
//! names the lab, the function, the field, expected against found with the bits decoded, and the
//! book chapter. It never links or loads lab code. The probe (`grader-probe`, crate
//! `grader-probe`) runs lab code on the inputs the judge sends and reports raw observations;
//! official grading starts it jailed. What crosses between them is `grader-protocol`.
//!
//! The runner (`runner.rs`) runs the checks in lab order, each request in a fresh probe process
//! (`sandbox.rs` contains it) with a CPU-time limit, marks a check "blocked" when a lab it needs
//! has failed and "not run" when this host cannot run it (`host.rs`). Every input is drawn from
//! a seed (`rng.rs`). `cargo grade` prints the scoreboard (`scoreboard.rs`).

pub mod checks;
pub mod describe;
pub mod facts;
pub mod guestgen;
pub mod host;
pub mod rng;
pub mod rules;
pub mod runner;
pub mod sandbox;
pub mod scoreboard;
pub mod walker;

use std::time::Duration;

use grader_protocol::{Answer, Envelope, Request};

use runner::{Finished, Limits, RunError};

/// Where the probe's requests go: a fresh jailed process per request (`runner::ProbeProgram`), or,
/// in the kit's own tests, the probe library called in-process with a seeded mistake.
pub trait Backend {
    /// Runs the probe on one request (`input`, JSON of an `Envelope`) within `limits`.
    fn exchange(&mut self, input: &[u8], limits: Limits) -> Result<Finished, RunError>;
}

/// Why a check stopped before it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It failed: the message for the student.
    Failed(String),
    /// Lab code reached a `todo!` stub: `not implemented yet: …`.
    NotImplemented(String),
    /// The probe ran past its limit and was stopped with everything it started.
    TimedOut(String),
    /// SIGINT or SIGTERM reached the grader (the signal's number).
    Interrupted(i32),
}

impl From<String> for Stop {
    fn from(message: String) -> Stop {
        Stop::Failed(message)
    }
}

/// What a check is given: its seed and the way to the probe.
pub struct Ctx<'a> {
    /// The seed of this check's inputs.
    pub seed: u64,
    backend: &'a mut dyn Backend,
    limits: Limits,
    /// What lab code printed in the last exchange, trimmed for a message (`""` when nothing).
    printed: String,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// A context whose requests go to `backend`, each within `limits`.
    pub fn new(seed: u64, backend: &'a mut dyn Backend, limits: Limits) -> Ctx<'a> {
        Ctx {
            seed,
            backend,
            limits,
            printed: String::new(),
        }
    }

    /// The random inputs of this check.
    pub fn rng(&self) -> rng::Rng {
        rng::Rng::new(self.seed)
    }

    /// What lab code printed in the last exchange, as a message's tail.
    pub fn printed(&self) -> &str {
        &self.printed
    }

    /// Sends `request` to the probe and returns what it observed. A stub reached, a panic, a
    /// process that ended before it answered, an unreadable answer or a limit stops the check.
    pub fn call<R: Request>(&mut self, request: &R) -> Result<R::Reply, Stop> {
        let input = serde_json::to_vec(&Envelope::of(request)).expect("a request is plain data");
        let finished = match self.backend.exchange(&input, self.limits) {
            Ok(finished) => finished,
            Err(RunError::TimedOut(message)) => return Err(Stop::TimedOut(message)),
            Err(RunError::Interrupted(signal)) => return Err(Stop::Interrupted(signal)),
            Err(RunError::Spawn(err)) => {
                return Err(Stop::Failed(format!("the grader cannot start its probe: {err}")));
            }
        };
        self.printed = runner::printed(&finished.stdout, &finished.stderr);
        let answer: Option<Answer> = serde_json::from_slice(&finished.result).ok();
        let status = runner::describe_status(finished.status);
        match answer {
            Some(Answer::NotImplemented(stub)) => Err(Stop::NotImplemented(format!("not implemented yet: {stub}"))),
            Some(Answer::Panicked(message)) => Err(Stop::Failed(format!("lab code panicked: {message}"))),
            Some(Answer::Refused(why)) => Err(Stop::Failed(format!(
                "the probe could not run {}: {why} (a fault of the kit, not of your labs: report it)",
                R::NAME
            ))),
            Some(Answer::Reply(_)) if !finished.status.success() => Err(Stop::Failed(format!(
                "the probe's process {status} after it had answered: lab code must not end the process"
            ))),
            Some(Answer::Reply(value)) => serde_json::from_value(value).map_err(|err| {
                Stop::Failed(format!(
                    "the probe's answer is malformed ({err}): lab code must not write on descriptor 3"
                ))
            }),
            None if finished.result.is_empty() => Err(Stop::Failed(format!(
                "the probe's process {status} before it answered: did lab code end the process (std::process::exit, abort, a crash or an overflowed stack)?"
            ))),
            None => Err(Stop::Failed(
                "the probe's answer is not readable: lab code must not write on descriptor 3".to_owned(),
            )),
        }
    }
}

/// What a check needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostNeed {
    /// Nothing: plain values and guest memory.
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
            Part::Lab(7) => "Lab 7 (extension): Moving a running VM",
            Part::Lab(_) => "Lab",
            Part::EndToEnd => "End to end: kvm-hello",
        }
    }
}

/// One graded check: its judge. The probe's side is the requests it sends.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Unique name, `labN_…` or `e2e_…`.
    pub name: &'static str,
    /// What it grades.
    pub part: Part,
    /// One line on the scoreboard.
    pub title: &'static str,
    /// Points when it passes.
    pub points: u32,
    /// Labs that must pass first (a check of theirs failing blocks this one).
    pub needs: &'static [u8],
    /// Earlier checks whose failure explains a failure of this one (the same lab function run
    /// on other inputs, or a step this one builds on): when one of them failed in the same run,
    /// this check's message points to it (`see CHECK (its cause)`) instead of guessing a cause.
    pub explained_by: &'static [&'static str],
    /// Whether it runs a guest (a longer time limit).
    pub runs_guest: bool,
    /// What it needs from the host: a check this host cannot run is reported "not run".
    pub host: HostNeed,
    /// The judge: sends requests through the context, compares, fails with the message.
    pub run: fn(&mut Ctx) -> Result<(), Stop>,
    /// A hidden check (Gradescope's and nbgrader's hidden tests): official grading runs it; the
    /// student copy leaves it out and says only how many there are and what they are worth.
    pub hidden: bool,
}

impl Check {
    /// This check, hidden.
    pub const fn hidden(self) -> Check {
        Check { hidden: true, ..self }
    }

    /// This check, explained by `checks` when they fail in the same run (see `explained_by`).
    pub const fn explained_by(self, checks: &'static [&'static str]) -> Check {
        Check {
            explained_by: checks,
            ..self
        }
    }

    /// The CPU time the probe (and all it starts) may use on one request before it is stopped.
    pub fn time_limit(&self) -> Duration {
        if self.runs_guest {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(10)
        }
    }
}

/// Every check, in the order they run: lab 1 to lab 4, end to end, then the extension labs 0, 5
/// and 6; each part's hidden checks after its public ones.
pub fn all_checks() -> Vec<Check> {
    // One part a line, in order: lab 1 to lab 4, end to end, then the extension labs 0, 5 and 6.
    let public: Vec<Check> = [
        checks::lab1::CHECKS, // lab 1
        checks::lab2::CHECKS, // lab 2
        checks::lab3::CHECKS, // lab 3
        checks::lab4::CHECKS, // lab 4
        checks::e2e::CHECKS,  // end to end
        checks::lab0::CHECKS, // lab 0
        checks::lab5::CHECKS, // lab 5
        checks::lab6::CHECKS, // lab 6
        checks::lab7::CHECKS, // lab 7
    ]
    .concat();
    let mut all = Vec::new();
    for check in &public {
        all.push(*check);
        let last_of_part = public.iter().rfind(|c| c.part == check.part).map(|c| c.name) == Some(check.name);
        if last_of_part {
            all.extend(checks::hidden::CHECKS.iter().filter(|h| h.part == check.part));
        }
    }
    all
}

/// A check by name.
pub fn find_check(name: &str) -> Option<Check> {
    all_checks().into_iter().find(|check| check.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_is_explained_only_by_checks_that_run_before_it() {
        let all = all_checks();
        for (i, check) in all.iter().enumerate() {
            for name in check.explained_by {
                let at = all.iter().position(|c| c.name == *name);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{} is explained by {name}, which is not a check that runs before it",
                    check.name
                );
            }
        }
    }

    #[test]
    fn a_pointer_names_the_check_and_its_cause() {
        let message = checks::see(
            "lab0_create_vm",
            "lab0 create_vm: guest memory has regions [] (book: Lab 0, The LWN warm-up) (your code printed x)",
        );
        assert_eq!(
            message,
            "see lab0_create_vm (lab0 create_vm: guest memory has regions [])"
        );
        assert_eq!(checks::pointed_to(&message), Some("lab0_create_vm"));
        assert_eq!(
            checks::causes_named("lab3 special_registers/general_registers: a guest stopped"),
            [(3, "special_registers".to_owned()), (3, "general_registers".to_owned())]
        );
        assert_eq!(
            checks::causes_named("lab4 run_until_halt/lab1 vm_init: x"),
            [(4, "run_until_halt".to_owned()), (1, "vm_init".to_owned())]
        );
        assert!(checks::causes_named("lab code panicked: at src/lib.rs:3").is_empty());
        assert!(checks::causes_named(&message).is_empty());
    }
}
