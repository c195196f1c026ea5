//! Lab 6: two VMs on one thread. The scheduler's decision is checked on made-up accounts, then
//! the whole loop on two worker guests under each policy, through `vmm::run_schedule` (its
//! watchdog ends a loop that never returns, well within the check's time limit).
//!
//! Guest time is the thread's CPU time inside `KVM_RUN` and the slice timer counts CPU time too,
//! so the tolerances below hold on a loaded machine: load stretches the wall clock, not them.

use std::collections::BTreeMap;
use std::time::Duration;

use kit_common::Status;
use kvm_hello::vmm::{self, RunReport, ScheduleReport};
use lab6_scheduling::{Account, Choice, Policy, SliceEnd};

use super::{Group, fail};
use crate::{Check, Ctx, Part};

const LAB: u8 = 6;
/// Checks of the scheduler's decision alone: no KVM.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};
/// Checks that run the two worker VMs, built by labs 1 to 3 and run by a loop like lab 4's.
const GUEST: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3, 4],
    runs_guest: true,
};

/// The round-robin check's quantum: long against the CPU timer's granularity (a scheduler tick,
/// 1 to 10 ms), short enough for 50 slices in a second.
const QUANTUM: Duration = Duration::from_millis(20);
/// A timer slice may be this much shorter than its quantum: the timer counts the thread's CPU
/// time, guest time is only the part inside `KVM_RUN`, so the host's own work in the slice (its
/// exits, arming the timer) is missing from it. 2 ms sufficed on PVM; under QEMU-emulated SVM
/// (`cargo xtask svm-check`) the host's work is slower and a slice gave 17.8 ms of 20. A slice
/// that ends at a console exit instead of the timer is about 1 ms, far below.
const SLICE_EARLY: Duration = Duration::from_millis(5);
/// How much longer the median slice may be: the CPU timer goes off at the first scheduler tick
/// (1 to 10 ms) after it expired ...
const MEDIAN_LATE: Duration = Duration::from_millis(10);
/// ... and how much longer 9 slices in 10 may be: on a loaded machine the thread may run in
/// bursts that miss a few ticks (measured on 2 cores with 3 busy loops beside it: medians
/// 23-26 ms, the longest slice up to 60 ms, for a 20 ms quantum).
const P90_LATE: Duration = Duration::from_millis(20);
/// The weighted check's quantum and run: a hundred slices.
const WEIGHTED_QUANTUM: Duration = Duration::from_millis(10);
/// The length of the runs that measure (round robin, weighted).
const LONG_RUN: Duration = Duration::from_secs(1);
/// The length of the runs that only look at behaviour.
const SHORT_RUN: Duration = Duration::from_millis(200);
/// The weighted check's request, and how far the measured share may be from it.
const SHARES: [u32; 2] = [70, 30];
const SHARE_TOLERANCE_POINTS: f64 = 3.0;
/// The watchdog's budget on top of the run's duration.
const SLACK: Duration = Duration::from_secs(2);

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
        "weighted 70:30: measured shares within 3 points over 1 s",
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

fn account(guest_ms: u64) -> Account {
    Account {
        guest_time: Duration::from_millis(guest_ms),
        ..Account::default()
    }
}

fn next_slice_turns(ctx: &Ctx) -> Result<(), String> {
    let accounts = [account(30), account(10)];
    let round_robin = Policy::RoundRobin { quantum: QUANTUM };
    let cases = [
        (Policy::Cooperative, None, 0, None),
        (Policy::Cooperative, Some(0), 1, None),
        (Policy::Cooperative, Some(1), 0, None),
        (round_robin, None, 0, Some(QUANTUM)),
        (round_robin, Some(0), 1, Some(QUANTUM)),
        (round_robin, Some(1), 0, Some(QUANTUM)),
    ];
    for (policy, last, vm, length) in cases {
        let found = (ctx.labs.next_slice)(&policy, &accounts, last);
        let expected = Choice { vm, length };
        if found != expected {
            return Err(fail(
                LAB,
                "next_slice",
                format!(
                    "{} after {last:?} chose {found:?}, expected {expected:?}: {}",
                    policy.name(),
                    if length.is_none() {
                        "cooperative slices have no length (they end at the guest's console exit) and go to the other VM (VM 0 when none ran before: last = None)"
                    } else {
                        "round robin gives the other VM one quantum, whatever the guest times (VM 0 when none ran before: last = None)"
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn next_slice_weighted(ctx: &Ctx) -> Result<(), String> {
    let policy = Policy::Weighted {
        quantum: WEIGHTED_QUANTUM,
        shares: SHARES,
    };
    // (guest times in ms, last, expected VM): 70:30 means A runs while A/70 <= B/30.
    let cases = [
        ([0, 0], None, 0),
        ([69, 30], Some(0), 0),
        ([71, 30], Some(0), 1),
        ([700, 290], Some(1), 1),
        ([700, 310], Some(1), 0),
        ([20, 0], Some(0), 1),
    ];
    for (times, last, vm) in cases {
        let accounts = [account(times[0]), account(times[1])];
        let found = (ctx.labs.next_slice)(&policy, &accounts, last);
        let expected = Choice {
            vm,
            length: Some(WEIGHTED_QUANTUM),
        };
        if found != expected {
            return Err(fail(
                LAB,
                "next_slice",
                format!(
                    "weighted {}:{} with guest times A {} ms, B {} ms chose {found:?}, expected {expected:?}: the VM \
                     whose guest time is furthest behind its share runs (A while A/{} <= B/{}), one quantum",
                    SHARES[0], SHARES[1], times[0], times[1], SHARES[0], SHARES[1]
                ),
            ));
        }
    }
    Ok(())
}

/// Runs the pair; a run that failed is the check's failure.
fn run_pair(ctx: &Ctx, policy: Policy, duration: Duration) -> Result<(RunReport, ScheduleReport), String> {
    let report = vmm::run_schedule(ctx.labs, policy, duration, true, SLACK);
    match (&report.failure, &report.schedule) {
        (None, Some(schedule)) => {
            let schedule = schedule.clone();
            Ok((report, schedule))
        }
        (Some(failure), _) if failure.status == Status::NotImplemented => super::stub_reached(&failure.message),
        (Some(failure), _) if failure.status == Status::LabPanicked => Err(failure.message.clone()),
        (Some(failure), _) => Err(fail(
            LAB,
            "run_schedule",
            format!("{} for {}: {}", policy.name(), ms(duration), failure.message),
        )),
        (None, None) => Err(fail(LAB, "run_schedule", "the run reported no schedule")),
    }
}

fn both_progress(ctx: &Ctx) -> Result<(), String> {
    let policies = [
        Policy::Cooperative,
        Policy::RoundRobin { quantum: QUANTUM },
        Policy::Weighted {
            quantum: WEIGHTED_QUANTUM,
            shares: SHARES,
        },
    ];
    for policy in policies {
        let (_, schedule) = run_pair(ctx, policy, SHORT_RUN)?;
        for (vm, account) in schedule.accounts.iter().enumerate() {
            if account.progress == 0 || account.slices == 0 || account.guest_time.is_zero() {
                return Err(fail(
                    LAB,
                    "run_schedule",
                    format!(
                        "{} for {}: VM {} ran {} slices, {} of guest time, progress {}: both VMs must run and progress (is the guest time of each KVM_RUN added to its account, the progress read at the end of each slice?)",
                        policy.name(),
                        ms(SHORT_RUN),
                        char::from(schedule.names[vm]),
                        account.slices,
                        ms(account.guest_time),
                        account.progress
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn cooperative_alternates(ctx: &Ctx) -> Result<(), String> {
    let (_, schedule) = run_pair(ctx, Policy::Cooperative, SHORT_RUN)?;
    for (i, slice) in schedule.slices.iter().enumerate() {
        let expected_vm = i % 2;
        if slice.vm != expected_vm || slice.ended_by != SliceEnd::Console || slice.exits != 1 {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "cooperative slice {i} ran VM {} for {} exit(s), ended by {:?}; expected VM {expected_vm}, ended by its one console exit: the VMs alternate at every console exit",
                    slice.vm, slice.exits, slice.ended_by
                ),
            ));
        }
    }
    Ok(())
}

fn round_robin_quantum(ctx: &Ctx) -> Result<(), String> {
    let (_, schedule) = run_pair(ctx, Policy::RoundRobin { quantum: QUANTUM }, LONG_RUN)?;
    let low = QUANTUM.saturating_sub(SLICE_EARLY);
    for (i, slice) in schedule.slices.iter().enumerate() {
        if slice.vm != i % 2 || slice.ended_by != SliceEnd::Timer {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "round-robin slice {i} ran VM {} and ended by {:?}; expected VM {}, ended by the timer",
                    slice.vm,
                    slice.ended_by,
                    i % 2
                ),
            ));
        }
        if slice.guest < low {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "round-robin slice {i} (VM {}) gave {} of guest time, less than the {} quantum: arm the slice timer with the slice's length before its first KVM_RUN, end the slice only at its EINTR, and disarm it after",
                    slice.vm,
                    ms(slice.guest),
                    ms(QUANTUM)
                ),
            ));
        }
    }
    let mut lengths: Vec<Duration> = schedule.slices.iter().map(|slice| slice.guest).collect();
    lengths.sort();
    let at = |fraction: f64| lengths.get(((lengths.len() as f64 - 1.0) * fraction) as usize).copied();
    let (median, p90) = (at(0.5).unwrap_or_default(), at(0.9).unwrap_or_default());
    if median > QUANTUM + MEDIAN_LATE || p90 > QUANTUM + P90_LATE {
        return Err(fail(
            LAB,
            "run_slice",
            format!(
                "round-robin slices of a {} quantum: median {}, 9 in 10 up to {}; expected at most {} and {}: a slice ends when the timer armed with the quantum goes off",
                ms(QUANTUM),
                ms(median),
                ms(p90),
                ms(QUANTUM + MEDIAN_LATE),
                ms(QUANTUM + P90_LATE)
            ),
        ));
    }
    Ok(())
}

fn weighted_shares(ctx: &Ctx) -> Result<(), String> {
    let policy = Policy::Weighted {
        quantum: WEIGHTED_QUANTUM,
        shares: SHARES,
    };
    let (_, schedule) = run_pair(ctx, policy, LONG_RUN)?;
    for (vm, &share) in SHARES.iter().enumerate() {
        let measured = 100.0 * schedule.share(vm);
        let requested = f64::from(share);
        if (measured - requested).abs() > SHARE_TOLERANCE_POINTS {
            return Err(fail(
                LAB,
                "next_slice",
                format!(
                    "weighted {}:{} over {}: VM {} got {measured:.1}% of the guest time ({}), expected {requested}% within {SHARE_TOLERANCE_POINTS} points",
                    SHARES[0],
                    SHARES[1],
                    ms(LONG_RUN),
                    char::from(schedule.names[vm]),
                    ms(schedule.accounts[vm].guest_time)
                ),
            ));
        }
    }
    Ok(())
}

/// The rounds each VM printed, in order, from lines `[A] A 17`; a line of another shape is an error.
fn printed_rounds(output: &str, names: [u8; 2]) -> Result<BTreeMap<u8, Vec<u64>>, String> {
    let mut rounds: BTreeMap<u8, Vec<u64>> = names.iter().map(|&name| (name, Vec::new())).collect();
    for line in output.lines() {
        let parsed = line.strip_prefix('[').and_then(|rest| {
            let (prefix, text) = rest.split_once("] ")?;
            let (name, number) = text.split_once(' ')?;
            (prefix == name && name.len() == 1).then_some((name.as_bytes()[0], number.parse::<u64>().ok()?))
        });
        match parsed.and_then(|(name, n)| Some((rounds.get_mut(&name)?, n))) {
            Some((list, n)) => list.push(n),
            None => {
                return Err(fail(
                    LAB,
                    "run_slice",
                    format!(
                        "the console line {line:?} is not one VM's line (\"[A] A 17\"): keep each VM's half-written line in its own buffer and write it, with its prefix, at its newline"
                    ),
                ));
            }
        }
    }
    Ok(rounds)
}

fn state_survives_switches(ctx: &Ctx) -> Result<(), String> {
    let (report, schedule) = run_pair(ctx, Policy::RoundRobin { quantum: QUANTUM }, LONG_RUN)?;
    for vm in 0..2 {
        let progress: Vec<u64> = schedule
            .slices
            .iter()
            .filter(|slice| slice.vm == vm)
            .map(|slice| slice.progress)
            .collect();
        if let Some(pair) = progress.windows(2).find(|pair| pair[1] <= pair[0]) {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "VM {}'s progress went from {} to {} between two of its slices: a VM must go on where it stopped (do not set its registers again, run its own vCPU)",
                    char::from(schedule.names[vm]),
                    pair[0],
                    pair[1]
                ),
            ));
        }
    }
    let output = String::from_utf8_lossy(&report.output);
    let rounds = printed_rounds(&output, schedule.names)?;
    for (vm, &name) in schedule.names.iter().enumerate() {
        let printed = &rounds[&name];
        let progress = schedule.accounts[vm].progress;
        let consecutive = printed.iter().zip(1..).all(|(&n, expected)| n == expected);
        let count = printed.len() as u64;
        if !consecutive || count + 1 < progress || count > progress {
            return Err(fail(
                LAB,
                "run_slice",
                format!(
                    "VM {} reached round {progress} but its lines on the console are rounds {}: each round's line must appear once, in order (is a line lost at a switch?)",
                    char::from(name),
                    summarize(printed)
                ),
            ));
        }
    }
    Ok(())
}

/// `1..=40, 1..=3`: runs of consecutive numbers.
fn summarize(numbers: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &n in numbers {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => runs.push((n, n)),
        }
    }
    let shown: Vec<String> = runs.iter().take(6).map(|(a, b)| format!("{a}..={b}")).collect();
    let more = if runs.len() > 6 { ", ..." } else { "" };
    format!(
        "{}{more}",
        if shown.is_empty() {
            "none".to_owned()
        } else {
            shown.join(", ")
        }
    )
}

fn ends_at_duration(ctx: &Ctx) -> Result<(), String> {
    let (_, schedule) = run_pair(ctx, Policy::RoundRobin { quantum: QUANTUM }, LONG_RUN)?;
    let total = schedule.accounts[0].guest_time + schedule.accounts[1].guest_time;
    let last = schedule.slices.last().map(|slice| slice.guest).unwrap_or_default();
    // The last slice starts below the duration and reaches it; how far past depends on the timer.
    let before_last = total.saturating_sub(last);
    if total < LONG_RUN || before_last >= LONG_RUN {
        return Err(fail(
            LAB,
            "run_schedule",
            format!(
                "the loop ended after {} of guest time, {} before its last slice, for a duration of {}: loop while the two VMs' guest time together is below the duration, and stop at once when it is reached",
                ms(total),
                ms(before_last),
                ms(LONG_RUN)
            ),
        ));
    }
    Ok(())
}
