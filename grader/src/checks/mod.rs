//! The checks, one module per lab, and the helpers that phrase their failures.

pub mod e2e;
pub mod hidden;
pub mod lab0;
pub mod lab1;
pub mod lab2;
pub mod lab3;
pub mod lab4;
pub mod lab5;
pub mod lab6;
pub mod lab7;

use std::fmt::Display;
use std::time::Duration;

use crate::{Check, Ctx, HostNeed, Part, Stop};

/// What the checks of a group share: the part they grade, the labs they need, whether they run
/// a guest.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The part graded.
    pub part: Part,
    /// Labs that must pass first.
    pub needs: &'static [u8],
    /// Whether the checks run a guest.
    pub runs_guest: bool,
}

impl Group {
    /// A check of this group.
    pub const fn check(
        &self,
        name: &'static str,
        title: &'static str,
        points: u32,
        run: fn(&mut Ctx) -> Result<(), Stop>,
    ) -> Check {
        Check {
            name,
            part: self.part,
            title,
            points,
            needs: self.needs,
            explained_by: &[],
            runs_guest: self.runs_guest,
            host: if self.runs_guest {
                HostNeed::Kvm
            } else {
                HostNeed::Nothing
            },
            run,
            hidden: false,
        }
    }
}

/// The `--timeout` of a guest run inside a check: the vCPU thread's CPU time. kvm-hello's
/// watchdog also stops a run that is blocked for 12 times that or lasts 60 times that (45 s),
/// which stays within a guest check's wall-clock backstop (60 s), so a loop that sleeps is
/// named by the watchdog, not cut off by the runner. The checks' guests need a few ms.
pub const GUEST_TIMEOUT: Duration = Duration::from_millis(750);

/// The book chapter that explains a lab.
pub fn chapter(lab: u8) -> &'static str {
    match lab {
        0 => "Lab 0, The LWN warm-up",
        1 => "Lab 1, Guest memory and the vCPU",
        2 => "Lab 2, Page tables",
        3 => "Lab 3, Registers and CPU modes",
        4 => "Lab 4, The exit loop",
        5 => "Lab 5, Hypercalls",
        6 => "Lab 6, Scheduling two VMs",
        7 => "Lab 7, Moving a running VM",
        _ => "kvm-hello reference",
    }
}

/// `labN function: what (book: chapter)`.
pub fn fail(lab: u8, function: &str, what: impl Display) -> String {
    format!("lab{lab} {function}: {what} (book: {})", chapter(lab))
}

/// `labN f1/f2/…: what (book: chapter)`: a failure that has several causes the check cannot
/// tell apart, the most likely first. `what` says what was seen and how each would cause it.
pub fn fail_one_of(lab: u8, functions: &[&str], what: impl Display) -> String {
    fail(lab, &functions.join("/"), what)
}

/// The lab functions a message names as its cause, as `(lab, function)`, the most likely first:
/// `lab4 handle_exit: …` names one, `lab3 special_registers/general_registers: …` two (a later
/// one may name its own lab: `lab4 run_until_halt/lab1 vm_init`). Empty when the message names
/// none (a pointer to another check, a panic's own words, a fault of the kit).
pub fn causes_named(message: &str) -> Vec<(u8, String)> {
    let Some((place, _)) = message.split_once(": ") else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    let mut lab = None;
    for part in place.split('/') {
        let (part_lab, function) = match part.strip_prefix("lab").and_then(|rest| rest.split_once(' ')) {
            Some((number, function)) => match number.parse::<u8>() {
                Ok(number) => (Some(number), function),
                Err(_) => return Vec::new(),
            },
            None => (lab, part),
        };
        let Some(part_lab) = part_lab else {
            return Vec::new();
        };
        if function.is_empty() || !function.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Vec::new();
        }
        lab = Some(part_lab);
        causes.push((part_lab, function.to_owned()));
    }
    causes
}

/// What a check's message becomes when `check`, which explains its failure, failed in the same
/// run with `message`: a pointer with that check's one-line cause (its chapter left out).
pub fn see(check: &str, message: &str) -> String {
    let cause = message.split(" (book: ").next().unwrap_or(message);
    format!("see {check} ({cause})")
}

/// The check a message from `see` points to.
pub fn pointed_to(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("see ")?;
    let (check, _) = rest.split_once(" (")?;
    Some(check)
}

/// Fails with `field = found, expected expected: why` unless the two are equal.
pub fn expect_field(
    lab: u8,
    function: &str,
    field: &str,
    found: u64,
    expected: u64,
    show: fn(u64) -> String,
    why: &str,
) -> Result<(), String> {
    if found == expected {
        return Ok(());
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    Err(fail(
        lab,
        function,
        format!("{field} = {}, expected {}{why}", show(found), show(expected)),
    ))
}

/// A run of the student's VMM that stopped at a stub (status 6, `not implemented yet: …` on
/// stderr): the check stops as one that called the stub would.
pub fn stub_reached(message: &str) -> Stop {
    let stub = message.strip_prefix("not implemented yet: ").unwrap_or(message);
    Stop::NotImplemented(format!("not implemented yet: {stub}"))
}

/// The first difference between what a guest printed and what it should have, and what that
/// difference usually means.
pub fn output_difference(found: &[u8], expected: &[u8]) -> String {
    let show = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    let doubled: Vec<u8> = expected.iter().flat_map(|&b| [b, b]).collect();
    let cause = if found.is_empty() {
        "nothing: write the data of every OUT to the console port".to_owned()
    } else if found == doubled.as_slice() || found == [expected, expected].concat().as_slice() {
        "every byte twice: print an OUT's data once (handle_exit prints it; the loop must not print it again)"
            .to_owned()
    } else if expected.starts_with(found) {
        format!(
            "only the first {} of {} bytes: the run stopped early, or an OUT's bytes were not all printed",
            found.len(),
            expected.len()
        )
    } else if found.starts_with(expected) {
        format!(
            "{} bytes more than the guest wrote, after all of its {}",
            found.len() - expected.len(),
            expected.len()
        )
    } else {
        let at = found.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
        format!(
            "a different byte at offset {at}: {:?} where the guest wrote {:?}",
            found[at] as char, expected[at] as char
        )
    };
    format!("printed {}, expected {}: {cause}", show(found), show(expected))
}

/// How long the probe lets one run of the student's VMM go on before it kills it.
pub const VMM_WAIT_MS: u64 = 20_000;

/// One run of the student's VMM (`kvm-hello --guest GUEST ARGS`) through the probe, as `shown`
/// (the command line a message names) for lab `lab`: its JSON report, or why the run stops the
/// check (a stub reached: not implemented; a panic, a signal, a kill, no report: failed).
pub fn vmm_report(
    ctx: &mut Ctx,
    image: Vec<u8>,
    args: Vec<String>,
    lab: u8,
) -> Result<(serde_json::Value, grader_protocol::e2e::VmmOutput), Stop> {
    let shown = format!("kvm-hello --guest GUEST {}", args.join(" "));
    let outputs = ctx.call(&grader_protocol::e2e::RunVmm {
        runs: vec![grader_protocol::e2e::VmmRun { image, args }],
        wait_ms: VMM_WAIT_MS,
    })?;
    let Ok([run]) = <[_; 1]>::try_from(outputs) else {
        return Err(Stop::Failed(
            "the probe's answer is malformed (one run): lab code must not write on descriptor 3".to_owned(),
        ));
    };
    let stderr = String::from_utf8_lossy(&run.stderr).trim_end().to_owned();
    let program_fail = |what: String| {
        Stop::Failed(format!(
            "{shown}: {what} (its stderr: {stderr:?}) (book: {})",
            chapter(lab)
        ))
    };
    if run.killed {
        return Err(program_fail(format!(
            "still running after {} s: it was killed",
            VMM_WAIT_MS / 1000
        )));
    }
    let line = stderr.strip_prefix("kvm-hello: ").unwrap_or(&stderr);
    match run.status {
        Some(6) => return Err(stub_reached(line)),
        Some(7) => return Err(program_fail(format!("exit status 7: {line}"))),
        None => return Err(program_fail("ended by a signal".into())),
        _ => {}
    }
    let report = serde_json::from_slice(&run.stdout)
        .map_err(|err| program_fail(format!("its stdout is not one JSON report ({err})")))?;
    Ok((report, run))
}
