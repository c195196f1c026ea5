//! Lab 6: two VMs on one thread. The scheduler's decision is checked on accounts made for the
//! run, each built from the answer it must give; then the whole loop on two VMs of a worker guest
//! made for the run (its work, its lines, the VMs' names and which is first), under a quantum,
//! shares and a duration drawn for the run. The probe stands between the lab's loop and its
//! `run_slice`: the judge sees, slice by slice, what the guest did (its progress counter, the
//! bytes it printed, its starts, read from the VM's memory), the thread's CPU time in the slice
//! and what the lab's accounts say. The accounts count only where the guests confirm them.
//!
//! Every verdict on time is on the thread's CPU time, which a busy machine stretches in wall
//! clock only, with margins far from what an honest loop gives (measured on 2 cores beside
//! parallel builds, see the constants).

pub mod worker;

use std::time::Duration;

use grader_protocol::lab1::LabFailure;
use grader_protocol::lab6::{
    AccountSeen, ChoiceSeen, EndSeen, FirstSlices, LabSlice, NextSlice, PolicySpec, Schedule, ScheduleSeen,
    SliceQuestion, SliceSeen,
};

use super::{Group, fail, fail_one_of};
use crate::facts::schedule::PROGRESS_ADDR;
use crate::rng::Rng;
use crate::{Check, Ctx, Part, Stop};
use worker::{PRINTED_ADDR, STARTS_ADDR, StopBy, Worker};

const LAB: u8 = 6;
/// Checks of the scheduler's decision alone: no KVM.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
/// Checks that run the two worker VMs, built by labs 1 to 3 and run by a loop like lab 4's.
pub(super) const GUEST: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3, 4],
    runs_guest: true,
};

/// The words the probe reads around each slice, in this order.
const WATCH: [u64; 3] = [PROGRESS_ADDR, PRINTED_ADDR, STARTS_ADDR];
const PROGRESS: usize = 0;
const PRINTED: usize = 1;
const STARTS: usize = 2;

/// How much CPU time the lab's thread may use beyond the run's duration before the probe gives
/// up on it (an honest run uses a few ms: creating the VMs, the host's part of each slice).
const CPU_SLACK: Duration = Duration::from_secs(2);
/// How long the lab's thread may run in wall-clock time: far beyond a run of a second of CPU
/// time on a machine busy with parallel builds (3 to 5 s measured), well within a guest check's
/// 30 s limit.
const WALL_LIMIT: Duration = Duration::from_secs(20);
/// A timer slice may end this much before its quantum of the thread's CPU time: the CPU timer
/// never goes off early (measured: never below the quantum on PVM, idle or beside builds).
const SLICE_EARLY: Duration = Duration::from_millis(1);
/// The median timer slice, in the thread's CPU time, may be this much longer than its quantum:
/// the CPU timer goes off at the first scheduler tick after it expired (1 to 10 ms); measured
/// medians were 1 to 3 ms above the quantum on 2 busy cores, the longest slices 11 ms above.
const MEDIAN_LATE: Duration = Duration::from_millis(12);
/// In a slice without a console exit the guest time is one `KVM_RUN`, the one the timer
/// interrupted: it holds nearly all of the slice's CPU time (99% measured on PVM; under
/// QEMU-emulated SVM 89% with a console exit every few µs). Below this fraction it was not counted.
const SILENT_SLICE_GUEST: f64 = 0.5;
/// In any timer slice the `KVM_RUN` calls hold most of its CPU time, the host's part of its exits
/// the rest (measured: 93% at least with a console exit every 18 µs on PVM, on 2 busy cores; 89%
/// under QEMU-emulated SVM). Below this fraction the guest time of some of them was not counted.
const TIMER_SLICE_GUEST: f64 = 0.5;
/// Over all timer slices, the accounts' guest time against the thread's CPU time in them.
const ALL_SLICES_GUEST: f64 = 0.75;
/// Guest time a slice may show beyond the CPU time the thread spent in it: none (the same clock
/// measures both); this is the clock's rounding.
const CLOCK_ROUNDING: Duration = Duration::from_micros(20);
/// The weighted check: how far the accounts' shares may be from the request (one slice of a
/// hundred, and a late timer), ...
const ACCOUNT_SHARE_POINTS: f64 = 4.0;
/// ... and how far apart the two guests' best work per ms of their accounts' guest time in a
/// slice may be: they run the same code, and load only slows a slice; an account that misses or
/// borrows guest time moves its VM's rate by that much.
const RATE_FACTOR: f64 = 1.5;
/// A request is always this far from an even split, so that taking turns cannot pass.
const SHARE_FROM_EVEN: u32 = 15;
/// A slice still under way when the probe gave up that had run this long never ends (an honest
/// one lasts a quantum; the probe gives up after the run's duration and 2 s more).
const OPEN_SLICE: Duration = Duration::from_secs(1);
/// A VM's guest did no work in its slices at all although they ran this long: not its vCPU.
const IDLE_VM_CPU: Duration = Duration::from_millis(20);
/// The most slices an answer holds: all of a timer run's (a hundred at most, by the durations
/// and quanta below), the first of a cooperative run's (whose count grows with the host's speed).
const MAX_SLICES: usize = 160;
/// The console's first and last bytes an answer holds (a fast host prints much).
const CONSOLE_HEAD: usize = 24 * 1024;
const CONSOLE_TAIL: usize = 16 * 1024;

/// The checks of lab 6.
pub const CHECKS: &[Check] = &[
    PURE.check(
        "lab6_next_slice_turns",
        "next_slice: cooperative and round robin take turns",
        1,
        next_slice_turns,
    ),
    PURE.check(
        "lab6_next_slice_weighted",
        "next_slice: weighted runs the VM furthest behind its share",
        2,
        next_slice_weighted,
    ),
    GUEST.check(
        "lab6_both_progress",
        "both VMs make progress under every policy",
        2,
        both_progress,
    ),
    GUEST.check(
        "lab6_cooperative_alternates",
        "cooperative: the VMs alternate at each console exit",
        2,
        cooperative_alternates,
    ),
    GUEST.check(
        "lab6_round_robin_quantum",
        "round robin: slices of one quantum of guest time",
        2,
        round_robin_quantum,
    ),
    GUEST.check(
        "lab6_weighted_shares",
        "weighted: the accounts follow the shares, confirmed by the guests' work",
        3,
        weighted_shares,
    ),
    GUEST.check(
        "lab6_state_survives_switches",
        "progress only grows; no line lost or mixed",
        2,
        state_survives_switches,
    ),
    GUEST.check(
        "lab6_ends_at_duration",
        "the loop ends once the guest time reaches the duration",
        1,
        ends_at_duration,
    ),
];

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn ms_between(rng: &mut Rng, low: u64, high: u64) -> Duration {
    Duration::from_millis(rng.range(low, high + 1))
}

/// `Choice { vm: 1, length: Some(20ms) }`, as lab 6's `Choice` prints.
fn choice(vm: usize, length: Option<Duration>) -> String {
    format!("Choice {{ vm: {vm}, length: {length:?} }}")
}

/// An account whose guest time is `guest_time`, the rest random: only the guest time decides.
fn account(rng: &mut Rng, guest_time: Duration) -> AccountSeen {
    AccountSeen {
        guest_time,
        slices: rng.range(0, 200),
        exits: rng.range(0, 5000),
        by_reason: [0; 6],
        progress: rng.range(0, 100_000),
    }
}

fn ask(ctx: &mut Ctx, questions: &[SliceQuestion]) -> Result<Vec<ChoiceSeen>, Stop> {
    let answers = ctx.call(&NextSlice {
        questions: questions.to_vec(),
    })?;
    if answers.len() != questions.len() {
        return Err(Stop::Failed(
            "the probe's answer is malformed: lab code must not write on descriptor 3".into(),
        ));
    }
    Ok(answers)
}

fn next_slice_turns(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let quantum = Duration::from_micros(rng.range(1_000, 50_000));
    let round_robin = PolicySpec::RoundRobin { quantum };
    let mut cases = Vec::new();
    for policy in [PolicySpec::Cooperative, round_robin] {
        for last in [None, Some(0), Some(1)] {
            // Guest times that would make a weighted choice go either way.
            let times = [rng.range(0, 2_000_000), rng.range(0, 2_000_000)].map(Duration::from_micros);
            let accounts = [account(&mut rng, times[0]), account(&mut rng, times[1])];
            cases.push(SliceQuestion { policy, accounts, last });
        }
    }
    rng.shuffle(&mut cases);
    let answers = ask(ctx, &cases)?;
    for (case, found) in cases.iter().zip(answers) {
        // The other VM; VM 0 first.
        let vm = case.last.map_or(0, |last| 1 - last);
        let length = case.policy.quantum();
        if found.vm != vm || found.length != length {
            return Err(fail(
                LAB,
                "next_slice",
                format!(
                    "{} after {:?} chose {}, expected {}: {}",
                    case.policy.name(),
                    case.last,
                    choice(found.vm, found.length),
                    choice(vm, length),
                    if length.is_none() {
                        "cooperative slices have no length (they end at the guest's console exit) and go to the other VM (VM 0 when none ran before: last = None)"
                    } else {
                        "round robin gives the other VM one quantum, whatever the guest times (VM 0 when none ran before: last = None)"
                    }
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Shares for a run: VM 0's is at least `SHARE_FROM_EVEN` points from 50, either side.
fn random_shares(rng: &mut Rng) -> [u32; 2] {
    let off = rng.range(u64::from(SHARE_FROM_EVEN), 31) as u32;
    let first = if rng.chance(50) { 50 + off } else { 50 - off };
    [first, 100 - first]
}

fn next_slice_weighted(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    // Never 50:50, where both orders of the shares are right.
    let off = rng.range(1, 46) as u32;
    let first = if rng.chance(50) { 50 + off } else { 50 - off };
    let shares = [first, 100 - first];
    let quantum = Duration::from_micros(rng.range(1_000, 30_000));
    let policy = PolicySpec::Weighted { quantum, shares };
    let [a, b] = shares.map(u64::from);
    // Each case is built from the VM it must choose: VM 0 runs while its guest time over its
    // share is at most VM 1's. `k` ns of guest time per point of share puts both exactly on
    // their shares (a tie, VM 0); one ns more for VM 0 puts it past its share.
    let mut cases: Vec<([u64; 2], usize)> = vec![([0, 0], 0)];
    for _ in 0..2 {
        let k = rng.range(10_000, 10_000_000);
        cases.push(([a * k, b * k], 0));
        cases.push(([a * k + 1, b * k], 1));
        cases.push(([a * k - 1, b * k], 0));
        cases.push(([a * k, b * k + 1], 0));
        cases.push(([a * k, b * k - 1], 1));
        // Far from a tie: one VM a random fraction behind.
        let behind = rng.range(1, 90);
        cases.push(([a * k * (100 - behind) / 100, b * k], 0));
        cases.push(([a * k, b * k * (100 - behind) / 100], 1));
    }
    let first = rng.range(1, 1_000_000_000);
    cases.push(([first, 0], 1));
    cases.push(([0, first], 0));
    rng.shuffle(&mut cases);
    let questions: Vec<SliceQuestion> = cases
        .iter()
        .map(|(times, _)| {
            let accounts = [
                account(&mut rng, Duration::from_nanos(times[0])),
                account(&mut rng, Duration::from_nanos(times[1])),
            ];
            let last = *rng.pick(&[None, Some(0), Some(1)]);
            SliceQuestion { policy, accounts, last }
        })
        .collect();
    let answers = ask(ctx, &questions)?;
    for ((question, (_, vm)), found) in questions.iter().zip(&cases).zip(answers) {
        if found.vm != *vm || found.length != Some(quantum) {
            let [t0, t1] = question.accounts.map(|a| a.guest_time);
            return Err(fail(
                LAB,
                "next_slice",
                format!(
                    "weighted {a}:{b} with guest times VM 0 {t0:?}, VM 1 {t1:?} chose {}, expected {}: the VM whose \
                     guest time is furthest behind its share runs (VM 0 while time0/{a} <= time1/{b}: compare \
                     time0 * {b} with time1 * {a} in nanoseconds, no division), one quantum",
                    choice(found.vm, found.length),
                    choice(*vm, Some(quantum)),
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// One run of the pair: the policy, the duration, the worker, the names.
struct Run {
    policy: PolicySpec,
    duration: Duration,
    worker: Worker,
    names: [u8; 2],
}

impl Run {
    fn new(rng: &mut Rng, policy: PolicySpec, duration: Duration, shape: fn(&mut Rng) -> Worker) -> Run {
        let worker = shape(rng);
        let first = rng.range(u64::from(b'A'), u64::from(b'Z') + 1) as u8;
        let mut second = first;
        while second == first {
            second = rng.range(u64::from(b'A'), u64::from(b'Z') + 1) as u8;
        }
        Run {
            policy,
            duration,
            worker,
            names: [first, second],
        }
    }

    /// `round-robin (quantum 12 ms) for 300.0 ms`.
    fn describe(&self) -> String {
        let how = match self.policy {
            PolicySpec::Cooperative => String::new(),
            PolicySpec::RoundRobin { quantum } => format!(" (quantum {})", ms(quantum)),
            PolicySpec::Weighted { quantum, shares } => {
                format!(" {}:{} (quantum {})", shares[0], shares[1], ms(quantum))
            }
        };
        format!("{}{how} for {}", self.policy.name(), ms(self.duration))
    }

    fn name(&self, vm: usize) -> char {
        char::from(self.names[vm])
    }
}

/// A worker that prints a line every round or few: many console exits in every slice.
fn chatty(rng: &mut Rng) -> Worker {
    worker::worker(
        rng.next_u64(),
        rng.range(16, 65) as u32,
        rng.range(1, 4) as u32,
        u32::MAX,
    )
}

/// A chatty worker that also works in the middle of each line, as long as between two: a
/// slice the timer ends often ends with a line half written.
fn chatty_pausing_mid_line(rng: &mut Rng) -> Worker {
    let (iterations, units_per_line) = (rng.range(16, 65) as u32, rng.range(1, 4) as u32);
    worker::worker_pausing_mid_line(rng.next_u64(), iterations, units_per_line, iterations * units_per_line)
}

/// A worker that prints a few lines, then works on without an exit: its slices are one
/// `KVM_RUN` each, the one the timer interrupts.
fn quiet(rng: &mut Rng) -> Worker {
    worker::worker(rng.next_u64(), rng.range(32, 97) as u32, 1, rng.range(4, 17) as u32)
}

/// What a run did, once the probe's record and the lab's agree.
struct Ran {
    seen: ScheduleSeen,
    accounts: [AccountSeen; 2],
    words: [Vec<u64>; 2],
    /// The probe's record of each slice: its VM, its account before and after, the words.
    slices: Vec<Slice>,
}

/// One slice of the probe's record, complete.
struct Slice {
    vm: usize,
    length: Option<Duration>,
    /// The account's growth in guest time.
    guest: Duration,
    cpu: Duration,
    before: Vec<u64>,
    after: Vec<u64>,
    console: (usize, usize),
    ended: EndSeen,
}

impl Slice {
    fn grew(&self, word: usize) -> i128 {
        i128::from(self.after[word]) - i128::from(self.before[word])
    }
}

fn lab_failed(failure: LabFailure) -> Stop {
    Stop::Failed(fail(LAB, &failure.function, failure.error))
}

fn malformed() -> Stop {
    Stop::Failed("the probe's answer is malformed: lab code must not write on descriptor 3".into())
}

/// Runs the pair; a run that failed, did not return, or whose record of its slices is not what
/// it ran is the check's failure.
fn run_pair(ctx: &mut Ctx, run: &Run) -> Result<Ran, Stop> {
    let seen = ctx
        .call(&Schedule {
            image: run.worker.image.clone(),
            names: run.names,
            policy: run.policy,
            duration: run.duration,
            watch: WATCH.to_vec(),
            cpu_limit: run.duration + CPU_SLACK,
            wall_limit: WALL_LIMIT,
            max_slices: MAX_SLICES,
            console_head: CONSOLE_HEAD,
            console_tail: CONSOLE_TAIL,
        })?
        .map_err(lab_failed)?;
    let what = run.describe();
    let Some(returned) = &seen.returned else {
        let given_up = seen.given_up.clone().ok_or_else(malformed)?;
        let timeout = format!(
            "{what}: timeout: lab6 {} did not return within {} of CPU time ({:.1} s of wall clock)",
            given_up.running,
            ms(run.duration + CPU_SLACK),
            given_up.wall.as_secs_f64()
        );
        // A slice that ran on and on is the cause; else the slices that ran tell why the loop
        // did not reach its duration.
        let open = seen.last.as_ref().filter(|slice| slice.ended.is_none());
        if let (Some(slice), Some(in_slice)) = (open, given_up.in_slice)
            && let Some(vm) = slice.vm
            && in_slice >= OPEN_SLICE
        {
            let length = slice.length.map_or("with no length".to_owned(), |length| {
                format!("with a length of {}", ms(length))
            });
            // The slice that never ended is run_slice's (its timer), or the length the loop
            // gave it: the run cannot tell which.
            let causes = if given_up.running == "run_slice" {
                vec!["run_slice"]
            } else {
                vec!["run_slice", given_up.running.as_str()]
            };
            return Err(fail_one_of(
                LAB,
                &causes,
                format!(
                    "{timeout}: does it loop forever? (its slice {} of VM {}, {length}, never ended: {} of CPU time in it; a slice with a length ends at the timer's EINTR, one without at the guest's first console exit)",
                    seen.slices.total.saturating_sub(1),
                    run.name(vm),
                    ms(in_slice)
                ),
            )
            .into());
        }
        let done: Vec<Slice> = seen
            .slices
            .first
            .iter()
            .filter_map(|slice| finished(slice).ok())
            .collect();
        if let Some(why) = slice_guest_time_wrong(run, &done) {
            return Err(fail(
                LAB,
                "run_slice",
                format!("{why}; the loop, which ends on the accounts, had not ended ({timeout})"),
            )
            .into());
        }
        return Err(fail(
            LAB,
            &given_up.running,
            format!("{timeout}: does it loop forever?{}", unfinished_accounts(&done)),
        )
        .into());
    };
    let lab_slices = match returned {
        Ok(slices) => slices,
        Err(err) => return Err(fail(LAB, "run_schedule", format!("{what}: {err}")).into()),
    };
    let (Some(accounts), Some(words), Some(names)) = (seen.accounts, seen.words.clone(), seen.names) else {
        return Err(malformed());
    };
    if words.iter().any(|w| w.len() != WATCH.len()) {
        return Err(malformed());
    }
    if names != run.names {
        return Err(fail(
            LAB,
            "create_guest_vm",
            format!(
                "the VMs made as {:?} and {:?} are named {:?} and {:?}: keep the name it is given",
                run.name(0),
                run.name(1),
                char::from(names[0]),
                char::from(names[1])
            ),
        )
        .into());
    }
    if seen.slices.first.len() as u64 != seen.slices.total.min(MAX_SLICES as u64) {
        return Err(malformed());
    }
    if run.policy != PolicySpec::Cooperative && seen.slices.total > MAX_SLICES as u64 {
        return Err(fail(
            LAB,
            "run_slice",
            format!(
                "{what}: the loop ran {} slices, more than {MAX_SLICES}: a slice with a length lasts until the slice timer armed with it goes off",
                seen.slices.total
            ),
        )
        .into());
    }
    let mut ended = Vec::new();
    for (i, slice) in seen.slices.first.iter().enumerate() {
        if slice.vm.is_none() {
            return Err(fail(
                LAB,
                "run_schedule",
                format!(
                    "{what}: slice {i} ran a GuestVm that is not one of the two in `vms`: run the pair in place (no copy, no new VM)"
                ),
            )
            .into());
        }
        ended.push(finished(slice).map_err(|err| match err {
            Some(err) => Stop::Failed(fail(LAB, "run_slice", format!("{what}: slice {i}: {err}"))),
            None => malformed(),
        })?);
    }
    if ended.is_empty() {
        return Err(fail(
            LAB,
            "run_schedule",
            format!(
                "{what}: run_schedule returned {} slices but ran none through parts.run_slice: run every slice with parts.run_slice (and choose it with parts.next_slice)",
                lab_slices.total
            ),
        )
        .into());
    }
    expect_record(run, &seen.slices, lab_slices)?;
    Ok(Ran {
        seen,
        accounts,
        words,
        slices: ended,
    })
}

/// A slice of the probe's record that ended: `Err(Some(error))` when run_slice failed,
/// `Err(None)` when the record is not whole.
fn finished(slice: &SliceSeen) -> Result<Slice, Option<String>> {
    let (Some(vm), Some(after), Some(ended)) = (slice.vm, slice.after, slice.ended.clone()) else {
        return Err(None);
    };
    let ended = ended.map_err(Some)?;
    if vm > 1 || slice.words_before.len() != WATCH.len() || slice.words_after.len() != WATCH.len() {
        return Err(None);
    }
    Ok(Slice {
        vm,
        length: slice.length,
        guest: after.guest_time.saturating_sub(slice.before.guest_time),
        cpu: slice.cpu,
        before: slice.words_before.clone(),
        after: slice.words_after.clone(),
        console: (slice.console.0 as usize, slice.console.1 as usize),
        ended,
    })
}

/// The first timer slice whose guest did no console exit, so that its guest time is the one
/// `KVM_RUN` the timer interrupted, but whose account missed most of it.
fn undercounted(run: &Run, slices: &[Slice]) -> Option<String> {
    slices
        .iter()
        .enumerate()
        .find_map(|(i, slice)| silent_undercounted(run, i, slice))
}

/// Slice `i` when the timer ended it without a console exit of its guest, so that its guest time
/// is the one `KVM_RUN` the timer interrupted, but its account missed most of it.
fn silent_undercounted(run: &Run, i: usize, slice: &Slice) -> Option<String> {
    let silent = slice.ended == EndSeen::Timer && slice.grew(PRINTED) == 0;
    (silent && slice.guest.as_secs_f64() < SILENT_SLICE_GUEST * slice.cpu.as_secs_f64()).then(|| {
        format!(
            "{} slice {i} (VM {}): its guest did {} rounds of work without a console exit, one KVM_RUN that the timer interrupted, for {} of CPU time, but the account grew by {} of guest time: add the CPU time of every KVM_RUN to the account, also the one that ends in EINTR",
            run.policy.name(),
            run.name(slice.vm),
            slice.grew(PROGRESS),
            ms(slice.cpu),
            ms(slice.guest)
        )
    })
}

/// When the loop never returned but every slice did: the accounts' growth against the CPU time.
fn unfinished_accounts(slices: &[Slice]) -> String {
    let cpu: Duration = slices.iter().map(|slice| slice.cpu).sum();
    let guest: Duration = slices.iter().map(|slice| slice.guest).sum();
    if slices.is_empty() || guest.as_secs_f64() >= ALL_SLICES_GUEST * cpu.as_secs_f64() {
        return String::new();
    }
    format!(
        " (its {} slices used {} of the thread's CPU time, but the accounts grew by {} of guest time: the loop ends on the accounts, so count the CPU time of every KVM_RUN, also the one the timer interrupted)",
        slices.len(),
        ms(cpu),
        ms(guest)
    )
}

/// The slices `run_schedule` returned are the ones it ran: each the VM's account before and after.
fn expect_record(run: &Run, seen: &FirstSlices<SliceSeen>, returned: &FirstSlices<LabSlice>) -> Result<(), Stop> {
    let what = run.describe();
    if seen.total != returned.total {
        return Err(fail(
            LAB,
            "run_schedule",
            format!(
                "{what}: it returned {} slices, but ran {} through parts.run_slice: record every slice, in order",
                returned.total, seen.total
            ),
        )
        .into());
    }
    if returned.first.len() != seen.first.len() {
        return Err(malformed());
    }
    for (i, (slice, record)) in seen.first.iter().zip(&returned.first).enumerate() {
        let (Some(vm), Some(after), Some(Ok(ended))) = (slice.vm, slice.after, slice.ended.clone()) else {
            return Err(malformed());
        };
        let expected = LabSlice {
            vm,
            guest: after.guest_time.saturating_sub(slice.before.guest_time),
            exits: after.exits.saturating_sub(slice.before.exits),
            progress: after.progress,
            ended_by: ended,
        };
        if *record != expected {
            return Err(fail(
                LAB,
                "run_schedule",
                format!(
                    "{what}: slice {i} is recorded as VM {}, {} of guest time, {} exits, progress {}, ended by {:?}, but it ran VM {} whose account grew by {} and {} exits to progress {}, ended by {:?}: record each slice with Slice::between the VM's account before and after it",
                    record.vm,
                    ms(record.guest),
                    record.exits,
                    record.progress,
                    record.ended_by,
                    vm,
                    ms(expected.guest),
                    expected.exits,
                    expected.progress,
                    expected.ended_by
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn both_progress(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let quantum = ms_between(&mut rng, 3, 12);
    let shares = random_shares(&mut rng);
    // Slices of every kind: ended by a console exit (cooperative, chatty), interrupted by the
    // timer with many exits in them (chatty) and without any (quiet, after its first lines).
    let mut timer_shapes: [fn(&mut Rng) -> Worker; 2] = [chatty, quiet];
    rng.shuffle(&mut timer_shapes);
    let mut runs = [
        (
            PolicySpec::Cooperative,
            ms_between(&mut rng, 15, 30),
            chatty as fn(&mut Rng) -> Worker,
        ),
        (
            PolicySpec::RoundRobin { quantum },
            ms_between(&mut rng, 60, 120),
            timer_shapes[0],
        ),
        (
            PolicySpec::Weighted { quantum, shares },
            ms_between(&mut rng, 60, 120),
            timer_shapes[1],
        ),
    ]
    .map(|(policy, duration, shape)| Run::new(&mut rng, policy, duration, shape));
    rng.shuffle(&mut runs);
    for run in &runs {
        let ran = run_pair(ctx, run)?;
        for vm in 0..2 {
            let name = run.name(vm);
            let account = ran.accounts[vm];
            let progress = ran.words[vm][PROGRESS];
            let printed = ran.words[vm][PRINTED];
            let slices = ran.seen.per_vm[vm];
            let cpu: Duration = ran
                .slices
                .iter()
                .filter(|slice| slice.vm == vm)
                .map(|slice| slice.cpu)
                .sum();
            if progress == 0 {
                return Err(fail(
                    LAB,
                    "run_schedule",
                    format!(
                        "{}: VM {name}'s guest did no work (its progress at {PROGRESS_ADDR:#x} is 0) in its {slices} slices ({} of CPU time in the first {MAX_SLICES}): both VMs must run, each on its own vCPU",
                        run.describe(),
                        ms(cpu)
                    ),
                )
                .into());
            }
            let why = if account.slices != slices {
                Some(format!(
                    "its account counts {} slices, run_slice ran {slices}: count each slice in the VM's account",
                    account.slices,
                ))
            } else if account.guest_time.is_zero() {
                Some("its account holds no guest time: add the CPU time of each KVM_RUN to the VM's account".to_owned())
            } else if !(printed.saturating_sub(1)..=printed).contains(&account.exits) {
                // The guest counts each byte just before its OUT: the timer may come in between.
                Some(format!(
                    "its account counts {} exits, but its guest made {printed} console OUTs (the count at {PRINTED_ADDR:#x}): count every exit of the VM in its account",
                    account.exits
                ))
            } else if account.progress != progress {
                Some(format!(
                    "its account says progress {}, but the guest's counter at {PROGRESS_ADDR:#x} reads {progress} after its last slice: read the progress at the end of each slice",
                    account.progress
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(fail(
                    LAB,
                    "run_slice",
                    format!(
                        "{}: VM {name} ran {slices} slices and its guest did {progress} rounds of work; {why}",
                        run.describe()
                    ),
                )
                .into());
            }
        }
        every_slice_guest_time(run, &ran.slices)?;
    }
    stops_counted(ctx, &mut rng)
}

/// The exits of `by_reason` (lab 4's `ExitCounts` order) by name.
const REASONS: [&str; 6] = ["io_out", "io_in", "hlt", "mmio", "shutdown", "other"];

/// Guests that stop after a few lines in each way the lab tells apart (HLT, IN, OUT to another
/// port, a triple fault): run_schedule fails on that exit, and the VM's account counts it once,
/// by its reason (a triple fault as `shutdown` or `other`), beside the console OUTs its guest made.
fn stops_counted(ctx: &mut Ctx, rng: &mut Rng) -> Result<(), Stop> {
    let mut port = rng.range(0x10, 0x400) as u16;
    if port == u16::from(worker::CONSOLE) {
        port += 1;
    }
    let mut stops = [StopBy::Hlt, StopBy::In, StopBy::OutTo(port), StopBy::TripleFault];
    rng.shuffle(&mut stops);
    for stop in stops {
        let lines = rng.range(1, 5) as u32;
        let worker = worker::stopping_worker(
            rng.next_u64(),
            rng.range(16, 65) as u32,
            rng.range(1, 4) as u32,
            lines,
            stop,
        );
        let (quantum, duration) = (ms_between(rng, 3, 12), ms_between(rng, 40, 80));
        let mut run = Run::new(rng, PolicySpec::RoundRobin { quantum }, duration, chatty);
        run.worker = worker;
        let seen = ctx
            .call(&Schedule {
                image: run.worker.image.clone(),
                names: run.names,
                policy: run.policy,
                duration: run.duration,
                watch: WATCH.to_vec(),
                cpu_limit: run.duration + CPU_SLACK,
                wall_limit: WALL_LIMIT,
                max_slices: MAX_SLICES,
                console_head: CONSOLE_HEAD,
                console_tail: CONSOLE_TAIL,
            })?
            .map_err(lab_failed)?;
        let (how, field): (String, &[usize]) = match stop {
            StopBy::Hlt => ("a HLT".into(), &[2]),
            StopBy::In => (format!("an IN from port {:#x}", worker::CONSOLE), &[1]),
            StopBy::OutTo(port) => (format!("an OUT to port {port:#x}"), &[0]),
            StopBy::TripleFault => ("a triple fault (UD2 with no IDT)".into(), &[4, 5]),
        };
        let what = format!(
            "{}, with guests that stop with {how} after {lines} line(s)",
            run.describe()
        );
        let (Some(Err(_)), Some(accounts), Some(words)) = (&seen.returned, seen.accounts, &seen.words) else {
            let got = match &seen.returned {
                None => "did not return".to_owned(),
                Some(Ok(_)) => "returned its slices".to_owned(),
                Some(Err(_)) => return Err(malformed()),
            };
            return Err(fail(
                LAB,
                "run_slice",
                format!("{what}: run_schedule {got}; expected the error of that exit, which the worker never causes"),
            )
            .into());
        };
        if words.iter().any(|w| w.len() != WATCH.len()) {
            return Err(malformed());
        }
        let Some(stopped) = seen.last.as_ref().and_then(|slice| slice.vm) else {
            return Err(malformed());
        };
        let account = accounts[stopped];
        let printed = words[stopped][PRINTED];
        // The console OUTs, and the stop once in its field (a triple fault in one of two).
        let mut expected = [0u64; 6];
        expected[0] = printed;
        expected[field[0]] += 1;
        let mut found = account.by_reason;
        if let [first, second] = *field {
            found[first] += found[second];
            found[second] = 0;
        }
        if found != expected {
            let counts: Vec<String> = REASONS
                .iter()
                .zip(account.by_reason)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "{what}: VM {}'s account counts exits {} after its guest made {printed} console OUTs (the count at {PRINTED_ADDR:#x}) and then {how}: count every exit in the account by its reason, also the one that ends the run",
                    run.name(stopped),
                    counts.join(", ")
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Each slice's guest time against what the thread and the guest did in it: never more than the
/// thread's CPU time; in a slice the timer ended, most of it (all of it but the host's part of
/// the exits), whether the interrupted `KVM_RUN` was its only one or came after many exits; in a
/// slice ended by its console exit, more than nothing.
fn every_slice_guest_time(run: &Run, slices: &[Slice]) -> Result<(), Stop> {
    match slice_guest_time_wrong(run, slices) {
        Some(why) => Err(fail(LAB, "run_slice", why).into()),
        None => Ok(()),
    }
}

/// The first slice whose guest time the thread and the guest contradict, and how.
fn slice_guest_time_wrong(run: &Run, slices: &[Slice]) -> Option<String> {
    slices.iter().enumerate().find_map(|(i, slice)| {
        let name = run.name(slice.vm);
        // A VM's first slice also holds its thread's one-time costs (the run page mapped for the
        // timer, first touches of memory): under QEMU-emulated SVM such a slice of 8 exits showed
        // 1.8 ms of guest time in 9.0 ms of CPU time with the reference. Its fraction is not
        // judged; its later slices and the total over all slices are.
        let first_of_its_vm = !slices[..i].iter().any(|earlier| earlier.vm == slice.vm);
        if slice.guest > slice.cpu + CLOCK_ROUNDING {
            return Some(format!(
                "{} slice {i} (VM {name}) added {} of guest time to its account, more than the {} of CPU time the thread spent in the whole slice: guest time is the thread's CPU time inside KVM_RUN (thread_cpu_time before and after), not the wall clock",
                run.policy.name(),
                ms(slice.guest),
                ms(slice.cpu)
            ));
        }
        let exits = slice.grew(PRINTED);
        let why = match slice.ended {
            EndSeen::Timer if first_of_its_vm => return None,
            EndSeen::Timer if exits == 0 => return silent_undercounted(run, i, slice),
            EndSeen::Timer if slice.guest.as_secs_f64() < TIMER_SLICE_GUEST * slice.cpu.as_secs_f64() => format!(
                "the timer ended it after {exits} console exits of its guest, which did {} rounds of work",
                slice.grew(PROGRESS)
            ),
            EndSeen::Console if slice.guest.is_zero() => format!(
                "it was one KVM_RUN, ended by its guest's console exit after {} rounds of work",
                slice.grew(PROGRESS)
            ),
            EndSeen::Timer | EndSeen::Console => return None,
        };
        Some(format!(
            "{} slice {i} (VM {name}): {why}, for {} of the thread's CPU time, but the account grew by {} of guest time: add the CPU time of every KVM_RUN to the account, those that end in an exit and the one that ends in EINTR",
            run.policy.name(),
            ms(slice.cpu),
            ms(slice.guest)
        ))
    })
}

fn cooperative_alternates(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let duration = ms_between(&mut rng, 15, 30);
    let run = Run::new(&mut rng, PolicySpec::Cooperative, duration, chatty);
    let ran = run_pair(ctx, &run)?;
    for (i, slice) in ran.slices.iter().enumerate() {
        let expected_vm = i % 2;
        let printed = slice.grew(PRINTED);
        if slice.vm != expected_vm || slice.ended != EndSeen::Console || printed != 1 {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "cooperative slice {i} ran VM {} ({}), whose guest printed {printed} byte(s) in it, ended by {:?}; expected VM {expected_vm} ({}), ended by its one console exit: the VMs alternate at every console exit",
                    slice.vm,
                    run.name(slice.vm),
                    slice.ended,
                    run.name(expected_vm)
                ),
            )
            .into());
        }
    }
    Ok(())
}

fn round_robin_quantum(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let quantum = ms_between(&mut rng, 8, 20);
    let duration = ms_between(&mut rng, 250, 450);
    let run = Run::new(&mut rng, PolicySpec::RoundRobin { quantum }, duration, quiet);
    let ran = run_pair(ctx, &run)?;
    for (i, slice) in ran.slices.iter().enumerate() {
        let name = run.name(slice.vm);
        if slice.vm != i % 2 || slice.ended != EndSeen::Timer {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "round-robin slice {i} ran VM {} ({name}) and ended by {:?}; expected VM {} ({}), ended by the timer",
                    slice.vm,
                    slice.ended,
                    i % 2,
                    run.name(i % 2)
                ),
            )
            .into());
        }
        if slice.length != Some(quantum) {
            // The length run_schedule gave is next_slice's choice, or not passed on.
            return Err(fail_one_of(
                LAB,
                &["run_schedule", "next_slice"],
                format!(
                    "round-robin slice {i} (VM {name}) was run with a length of {:?}, expected the quantum {quantum:?}: pass next_slice's choice to run_slice",
                    slice.length
                ),
            )
            .into());
        }
        if slice.cpu + SLICE_EARLY < quantum {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "round-robin slice {i} (VM {name}) ended after {} of the thread's CPU time, less than the {} quantum: arm the slice timer with the slice's length before its first KVM_RUN, end the slice only at its EINTR, and disarm it after",
                    ms(slice.cpu),
                    ms(quantum)
                ),
            )
            .into());
        }
        if slice.guest > slice.cpu + CLOCK_ROUNDING {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "round-robin slice {i} (VM {name}) added {} of guest time to its account, more than the {} of CPU time the thread spent in the whole slice: guest time is the thread's CPU time inside KVM_RUN (thread_cpu_time before and after), not the wall clock",
                    ms(slice.guest),
                    ms(slice.cpu)
                ),
            )
            .into());
        }
    }
    if let Some(why) = undercounted(&run, &ran.slices) {
        return Err(fail(LAB, "run_slice", why).into());
    }
    let cpu: Duration = ran.slices.iter().map(|slice| slice.cpu).sum();
    let guest: Duration = ran.slices.iter().map(|slice| slice.guest).sum();
    if guest.as_secs_f64() < ALL_SLICES_GUEST * cpu.as_secs_f64() {
        return Err(fail(
            LAB,
            "run_slice",
            format!(
                "round robin: the {} slices took {} of the thread's CPU time, but the accounts grew by {} of guest time: add the CPU time of every KVM_RUN to the account, also the one that ends in EINTR",
                ran.slices.len(),
                ms(cpu),
                ms(guest)
            ),
        )
        .into());
    }
    let mut lengths: Vec<Duration> = ran.slices.iter().map(|slice| slice.cpu).collect();
    lengths.sort();
    let median = lengths[(lengths.len() - 1) / 2];
    if median > quantum + MEDIAN_LATE {
        return Err(fail(
            LAB,
            "run_slice",
            format!(
                "round-robin slices of a {} quantum took a median {} of the thread's CPU time, expected at most {}: a slice ends when the timer armed with its length goes off",
                ms(quantum),
                ms(median),
                ms(quantum + MEDIAN_LATE)
            ),
        )
        .into());
    }
    Ok(())
}

fn weighted_shares(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let shares = random_shares(&mut rng);
    weighted_run(ctx, rng, shares)
}

fn weighted_run(ctx: &mut Ctx, mut rng: Rng, shares: [u32; 2]) -> Result<(), Stop> {
    let quantum = ms_between(&mut rng, 8, 15);
    let duration = ms_between(&mut rng, 600, 900);
    // The quiet worker: its rounds are work alone. A chatty one's rounds also hold the exits of
    // its lines, longer for the VM whose line numbers have more digits, so that the VM with the
    // larger share does fewer rounds per ms (measured: 61.6% of the rounds for a 72% share).
    let run = Run::new(&mut rng, PolicySpec::Weighted { quantum, shares }, duration, quiet);
    let ran = run_pair(ctx, &run)?;
    let head = format!("weighted {}:{} over {}", shares[0], shares[1], ms(duration));
    // The accounts: the shares the lab's loop followed.
    let total_time = ran.accounts[0].guest_time + ran.accounts[1].guest_time;
    for (vm, &share) in shares.iter().enumerate() {
        let requested = f64::from(share);
        let time = 100.0 * ran.accounts[vm].guest_time.as_secs_f64() / total_time.as_secs_f64().max(1e-9);
        if (time - requested).abs() > ACCOUNT_SHARE_POINTS {
            return Err(fail(
                LAB,
                "next_slice",
                format!(
                    "{head}: VM {} got {time:.1}% of the guest time in the accounts ({}), expected {requested}% within {ACCOUNT_SHARE_POINTS} points: run the VM whose guest time is furthest behind its share",
                    run.name(vm),
                    ms(ran.accounts[vm].guest_time)
                ),
            )
            .into());
        }
    }
    // The guests confirm the accounts, slice by slice: no slice's guest time is more than the
    // thread's CPU time in it, and the two guests, which run the same code, did the same work per
    // ms of the guest time their accounts got in their best slices. A machine's load only slows
    // a slice (measured: single slices at half the rate, first slices slower, which moved
    // whole-run shares of the work by up to 12 points and a few-slice VM's median by 2x).
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for (i, slice) in ran.slices.iter().enumerate() {
        if slice.guest > slice.cpu + CLOCK_ROUNDING {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "{head}: slice {i} (VM {}) added {} of guest time to its account, more than the {} of CPU time the thread spent in the whole slice: guest time is the thread's CPU time inside KVM_RUN (thread_cpu_time before and after)",
                    run.name(slice.vm),
                    ms(slice.guest),
                    ms(slice.cpu)
                ),
            )
            .into());
        }
        if slice.guest >= quantum / 2 {
            rates[slice.vm].push(slice.grew(PROGRESS) as f64 / (slice.guest.as_secs_f64() * 1e3));
        }
    }
    let best = rates.map(|rates| rates.into_iter().reduce(f64::max));
    if let [Some(first), Some(second)] = best {
        let (slow, fast) = if first < second { (0, 1) } else { (1, 0) };
        let [slow_rate, fast_rate] = [slow, fast].map(|vm| best[vm].unwrap_or_default());
        if fast_rate > RATE_FACTOR * slow_rate {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "{head}: VM {}'s guest did up to {fast_rate:.2} rounds per ms of the guest time its account got in a slice, VM {}'s up to {slow_rate:.2}, the same work: the accounts do not hold the time each guest ran; add to each VM's account the CPU time of its own KVM_RUN calls",
                    run.name(fast),
                    run.name(slow)
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// What a worker VM prints, `X 1\n`, `X 2\n`, ... (its name, a space, the line's number): where
/// its lines end in the bytes it printed, and the text the host writes for them.
struct WorkerLines {
    name: u8,
    /// `ends[k - 1]`: the bytes printed up to the end of line k.
    ends: Vec<u64>,
}

impl WorkerLines {
    fn new(name: u8) -> WorkerLines {
        WorkerLines { name, ends: Vec::new() }
    }

    /// How many lines are complete in the first `printed` bytes.
    fn complete(&mut self, printed: u64) -> u64 {
        while self.ends.last().is_none_or(|&end| end < printed) {
            let k = self.ends.len() as u64 + 1;
            let end = self.ends.last().copied().unwrap_or(0) + 3 + k.to_string().len() as u64;
            self.ends.push(end);
        }
        self.ends.partition_point(|&end| end <= printed) as u64
    }

    /// Lines `from..=to` as the host writes them, each after the VM's prefix: `[X] X 17\n`.
    fn text(&self, from: u64, to: u64) -> String {
        let name = char::from(self.name);
        (from..=to).map(|k| format!("[{name}] {name} {k}\n")).collect()
    }
}

/// The line of `text` around byte `at`, without its newline.
fn line_at(text: &str, at: usize) -> &str {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    &text[start..end]
}

/// `[A] A 17` as (the prefix's name, the line's name, its number).
fn parse_line(line: &str) -> Option<(char, char, u64)> {
    let rest = line.strip_prefix('[')?;
    let (prefix, text) = rest.split_once("] ")?;
    let (name, number) = text.split_once(' ')?;
    let one = |s: &str| {
        let mut chars = s.chars();
        chars.next().filter(|_| chars.next().is_none())
    };
    Some((one(prefix)?, one(name)?, number.parse().ok()?))
}

fn state_survives_switches(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let quantum = ms_between(&mut rng, 3, 6);
    let duration = ms_between(&mut rng, 200, 300);
    let run = Run::new(
        &mut rng,
        PolicySpec::RoundRobin { quantum },
        duration,
        chatty_pausing_mid_line,
    );
    let ran = run_pair(ctx, &run)?;
    // The guest's memory: its progress only grows, and it starts once.
    let mut last: [Option<(usize, u64)>; 2] = [None, None];
    for (i, slice) in ran.slices.iter().enumerate() {
        let name = run.name(slice.vm);
        let (before, after) = (slice.before[PROGRESS], slice.after[PROGRESS]);
        let restarted = slice.after[STARTS] > 1;
        if after < before || restarted {
            let again = if restarted {
                ", and its guest started over from its entry point"
            } else {
                ""
            };
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "VM {name}'s progress went from {before} to {after} in slice {i}{again}: a VM must go on where it stopped (do not set its registers again, run its own vCPU)"
                ),
            )
            .into());
        }
        if let Some((at, end)) = last[slice.vm]
            && before != end
        {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "VM {name}'s progress went from {end} at the end of slice {at} to {before} at the start of slice {i}, while it did not run: only the VM's own vCPU may run its guest"
                ),
            )
            .into());
        }
        last[slice.vm] = Some((i, after));
    }
    for vm in 0..2 {
        let mine = ran.slices.iter().filter(|slice| slice.vm == vm);
        let cpu: Duration = mine.clone().map(|slice| slice.cpu).sum();
        let work: i128 = mine.map(|slice| slice.grew(PROGRESS)).sum();
        if work == 0 && cpu >= IDLE_VM_CPU {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "VM {}'s guest did no work in its slices ({} of CPU time): run the chosen VM's own vCPU",
                    run.name(vm),
                    ms(cpu)
                ),
            )
            .into());
        }
    }
    // The console, slice by slice, against what each guest printed: a slice writes the lines
    // its VM's guest completed in it (by the guest's own count of its bytes), each once, whole,
    // in order, after its VM's prefix. The guest counts a byte just before its OUT: a slice the
    // timer ended may have the count one ahead of the bytes out. A long console comes as its
    // head and its tail; each slice's bytes are judged where they are seen, and by their number.
    let console = &ran.seen.console;
    let (head, tail) = (console.head.as_bytes(), console.tail.as_bytes());
    let tail_start = console.len.saturating_sub(tail.len() as u64) as usize;
    let seen_at = |at: usize| -> Option<u8> {
        if at < head.len() {
            Some(head[at])
        } else if at >= tail_start {
            tail.get(at - tail_start).copied()
        } else {
            None
        }
    };
    let mut lines = [WorkerLines::new(run.names[0]), WorkerLines::new(run.names[1])];
    let mut done = [0u64; 2];
    let mut at = 0usize;
    for (i, slice) in ran.slices.iter().enumerate() {
        let name = run.name(slice.vm);
        let (start, end) = slice.console;
        if start != at {
            return Err(fail(
                LAB,
                "run_schedule",
                format!(
                    "the console got {} bytes between two slices (before slice {i}), outside run_slice: the guests' lines are written by run_slice, each at its newline",
                    start.saturating_sub(at)
                ),
            )
            .into());
        }
        at = end;
        let printed = slice.after[PRINTED];
        let vm_lines = &mut lines[slice.vm];
        let mut candidates = vec![vm_lines.complete(printed)];
        if slice.ended == EndSeen::Timer {
            candidates.push(vm_lines.complete(printed.saturating_sub(1)));
        }
        candidates.retain(|&k| k >= done[slice.vm]);
        let from = done[slice.vm] + 1;
        let texts: Vec<(u64, String)> = candidates.iter().map(|&k| (k, vm_lines.text(from, k))).collect();
        let matching = texts.iter().find(|(_, text)| text.len() == end - start);
        let Some((complete, expected)) = matching.or(texts.first()).cloned() else {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "in slice {i} VM {name}'s guest's count of the bytes it printed (at {PRINTED_ADDR:#x}) went back to {printed}: only the VM's own guest may write its memory"
                ),
            )
            .into());
        };
        let differs = (start..end)
            .find(|&byte| seen_at(byte).is_some_and(|seen| expected.as_bytes().get(byte - start) != Some(&seen)));
        if let Some(byte) = differs {
            // The line it is in, as far as the console shows it.
            let mut from_byte = byte;
            while from_byte > start && seen_at(from_byte - 1).is_some_and(|b| b != b'\n') {
                from_byte -= 1;
            }
            let line: Vec<u8> = (from_byte..end)
                .map_while(seen_at)
                .take_while(|&b| b != b'\n')
                .collect();
            let line = String::from_utf8_lossy(&line).into_owned();
            let wanted = line_at(&expected, byte - start);
            let why = match parse_line(&line) {
                Some((prefix, of, number)) if prefix == of && of == name => format!(
                    "VM {name}'s line {number} came where its line {} was expected: each line must appear once, in order (is a line lost at a switch?)",
                    parse_line(wanted).map_or(complete + 1, |(_, _, n)| n)
                ),
                Some((prefix, of, _)) if prefix == of => {
                    "write only the running VM's lines, each at its newline, after its own prefix".to_owned()
                }
                _ => format!(
                    "it is not one VM's line (\"[{name}] {name} 17\"): keep each VM's half-written line in its own buffer and write it, with its prefix, at its newline"
                ),
            };
            let wanted = if wanted.is_empty() {
                "no more lines".to_owned()
            } else {
                format!("{wanted:?}")
            };
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "the console line {line:?} was written in slice {i} of VM {name}, where its guest's output makes {wanted}: {why}"
                ),
            )
            .into());
        }
        if matching.is_none() {
            let lines = if complete < from {
                "no line".to_owned()
            } else {
                format!("its lines {from} to {complete}")
            };
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "in slice {i} VM {name}'s guest completed {lines} ({} bytes with their prefixes, by the guest's count of its bytes at {PRINTED_ADDR:#x}), but {} bytes were written: each line must appear once, whole, in order (is a line lost or cut at a switch?)",
                    expected.len(),
                    end - start
                ),
            )
            .into());
        }
        done[slice.vm] = complete;
    }
    if at as u64 != console.len {
        return Err(fail(
            LAB,
            "run_schedule",
            format!(
                "the console got {} bytes after the last slice, outside run_slice: the guests' lines are written by run_slice, each at its newline",
                console.len.saturating_sub(at as u64)
            ),
        )
        .into());
    }
    Ok(())
}

fn ends_at_duration(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let quantum = ms_between(&mut rng, 5, 15);
    let duration = ms_between(&mut rng, 150, 350);
    let shape: fn(&mut Rng) -> Worker = if rng.chance(50) { chatty } else { quiet };
    let run = Run::new(&mut rng, PolicySpec::RoundRobin { quantum }, duration, shape);
    let ran = run_pair(ctx, &run)?;
    let total = ran.accounts[0].guest_time + ran.accounts[1].guest_time;
    let counted: Duration = ran.slices.iter().map(|slice| slice.guest).sum();
    if counted != total {
        return Err(fail(
            LAB,
            "run_schedule",
            format!(
                "the accounts hold {} of guest time, but grew by {} in the slices: guest time is added in run_slice only, for each KVM_RUN",
                ms(total),
                ms(counted)
            ),
        )
        .into());
    }
    let last = ran.slices.last().map(|slice| slice.guest).unwrap_or_default();
    // The last slice starts below the duration and reaches it; how far past depends on the timer.
    let before_last = total.saturating_sub(last);
    if total < duration || before_last >= duration {
        return Err(fail(
            LAB,
            "run_schedule",
            format!(
                "the loop ended after {} of guest time, {} before its last slice, for a duration of {}: loop while the two VMs' guest time together is below the duration, and stop at once when it is reached",
                ms(total),
                ms(before_last),
                ms(duration)
            ),
        )
        .into());
    }
    // The accounts are confirmed by the CPU time the slices took: a loop whose accounts lag
    // behind it runs past its duration.
    let slices = ran.slices.len();
    let cpu_before_last: Duration = ran.slices[..slices - 1].iter().map(|slice| slice.cpu).sum();
    if cpu_before_last.as_secs_f64() * ALL_SLICES_GUEST >= duration.as_secs_f64() {
        return Err(fail(
            LAB,
            "run_slice",
            format!(
                "the slices before the last took {} of the thread's CPU time for a duration of {}, but the accounts counted {}: add the CPU time of every KVM_RUN to the account, also the one that ends in EINTR",
                ms(cpu_before_last),
                ms(duration),
                ms(before_last)
            ),
        )
        .into());
    }
    Ok(())
}
