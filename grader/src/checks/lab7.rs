//! Lab 7: snapshot, restore, the dirty log and a move, checked on the migration guest with the
//! judge's seed and write rate. The judge computes what the guest prints from its parameters
//! alone (`expected_run`, the guest's own arithmetic: it is deterministic), so a moved run is
//! judged against the unmoved run it must equal, and a page that a move loses or leaves stale
//! shows in the checksum, which folds every word of the guest's working set.

use grader_protocol::lab7::{DirtyLog, GuestParams, Move, MoveSeen, RoundTrip, VcpuSeen};
use kit_common::Status;

use super::{Group, fail, fail_one_of, output_difference, stub_reached};
use crate::{Check, Ctx, Part, Stop};

const LAB: u8 = 7;
/// Lab 7's VMs are built by labs 1 to 3 and lab 6's `create_guest_vm`.
const GUEST: Group = Group {
    part: Part::Lab(LAB),
    needs: &[1, 2, 3, 6],
    runs_guest: true,
};

/// The lab function that reads the dirty log.
const TAKE: &str = "take_dirty_pages";

/// The checks of lab 7 (a move needs a snapshot that round-trips and a working dirty log: their
/// checks' failures explain a move's).
pub const CHECKS: &[Check] = &[
    GUEST.check(
        "lab7_snapshot_round_trip",
        "snapshot and restore_snapshot carry the vCPU bit for bit; the restored guest ends the same",
        3,
        snapshot_round_trip,
    ),
    GUEST.check(
        "lab7_dirty_log",
        "take_dirty_pages reports every page the guest wrote, and only with the log on",
        3,
        dirty_log,
    ),
    GUEST
        .check(
            "lab7_move_fast_writer",
            "a moved guest prints the lines and checksum of an unmoved one (a fast writer)",
            4,
            move_fast_writer,
        )
        .explained_by(&["lab7_snapshot_round_trip", "lab7_dirty_log"]),
    GUEST
        .check(
            "lab7_rounds_converge",
            "pre-copy rounds shrink a slow writer's dirty set; stop-and-copy sends few pages",
            2,
            rounds_converge,
        )
        .explained_by(&["lab7_snapshot_round_trip", "lab7_dirty_log"]),
];

// The migration guest's arithmetic (guest/migrate/pager.rs), which the judge repeats.
/// Its working set: pages and 8-byte words per page.
const WORK_PAGES: u64 = 128;
const WORDS_PER_PAGE: u64 = 512;
/// Generator rounds per step before its writes.
const WORK_PER_STEP: u64 = 20;
/// A progress line every this many steps.
const PRINT_EVERY: u64 = 100;
/// Mixed into the seed (xorshift stays at 0).
const SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// The guest's memory in pages.
const GUEST_PAGES: u64 = 512;

fn next(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}

fn fold(sum: u64, value: u64) -> u64 {
    (sum.rotate_left(7) ^ value).wrapping_mul(0x100_0000_01B3)
}

/// What the guest prints, and its checksum, for `params`: the unmoved run every run must equal.
pub fn expected_run(params: GuestParams) -> (Vec<u8>, u64) {
    let mut memory = vec![0u64; (WORK_PAGES * WORDS_PER_PAGE) as usize];
    let mut state = next(params.seed ^ SEED_MIX) | 1;
    for word in memory.iter_mut() {
        state = next(state);
        *word = state;
    }
    let mut output = Vec::new();
    let mut running = 0u64;
    for step in 1..=params.steps {
        for _ in 0..WORK_PER_STEP {
            state = next(state);
        }
        for _ in 0..params.dirty_rate {
            state = next(state);
            let index = (((state >> 40) % WORK_PAGES) * WORDS_PER_PAGE + (state >> 20) % WORDS_PER_PAGE) as usize;
            let value = memory[index] ^ state;
            memory[index] = value.rotate_left(1);
            running = fold(running, value);
        }
        if step % PRINT_EVERY == 0 {
            output.extend_from_slice(format!("step {step} running {running:#018x}\n").as_bytes());
        }
    }
    let checksum = memory.iter().fold(running, |sum, &word| fold(sum, word));
    output.extend_from_slice(format!("checksum {checksum:#018x}\n").as_bytes());
    (output, checksum)
}

/// The first field where two vCPU states differ, by name.
fn first_difference(found: &VcpuSeen, expected: &VcpuSeen) -> Option<String> {
    let (f, e) = (&found.regs, &expected.regs);
    let regs = [
        ("rax", f.rax, e.rax),
        ("rbx", f.rbx, e.rbx),
        ("rcx", f.rcx, e.rcx),
        ("rdx", f.rdx, e.rdx),
        ("rsi", f.rsi, e.rsi),
        ("rdi", f.rdi, e.rdi),
        ("rsp", f.rsp, e.rsp),
        ("rbp", f.rbp, e.rbp),
        ("r8", f.r8, e.r8),
        ("r9", f.r9, e.r9),
        ("r10", f.r10, e.r10),
        ("r11", f.r11, e.r11),
        ("r12", f.r12, e.r12),
        ("r13", f.r13, e.r13),
        ("r14", f.r14, e.r14),
        ("r15", f.r15, e.r15),
        ("rip", f.rip, e.rip),
        ("rflags", f.rflags, e.rflags),
    ];
    if let Some((name, found, expected)) = regs.iter().find(|(_, a, b)| a != b) {
        return Some(format!(
            "{name} = {found:#x}, the snapshot's is {expected:#x}: set the general registers (KVM_SET_REGS)"
        ));
    }
    let (f, e) = (&found.sregs, &expected.sregs);
    let sregs = [
        ("cr0", f.cr0, e.cr0),
        ("cr3", f.cr3, e.cr3),
        ("cr4", f.cr4, e.cr4),
        ("efer", f.efer, e.efer),
        ("cs.l", u64::from(f.cs.l), u64::from(e.cs.l)),
        ("cs.selector", u64::from(f.cs.selector), u64::from(e.cs.selector)),
        ("ss.selector", u64::from(f.ss.selector), u64::from(e.ss.selector)),
    ];
    if let Some((name, found, expected)) = sregs.iter().find(|(_, a, b)| a != b) {
        return Some(format!(
            "{name} = {found:#x}, the snapshot's is {expected:#x}: set the special registers (KVM_SET_SREGS), before \
             the general ones"
        ));
    }
    if f != e {
        return Some("a special register differs from the snapshot's (KVM_SET_SREGS)".to_owned());
    }
    if found.fpu != expected.fpu {
        return Some("the FPU/SSE state differs from the snapshot's: set it too (KVM_SET_FPU)".to_owned());
    }
    None
}

fn snapshot_round_trip(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let params = GuestParams {
        seed: rng.next_u64(),
        dirty_rate: rng.range(1, 40),
        steps: rng.range(300, 500),
    };
    let steps_before = rng.range(3, 150);
    let seen = ctx.call(&RoundTrip { params, steps_before })?;
    let snapshot = seen.snapshot.map_err(|err| fail(LAB, "snapshot", err))?;
    let restored = seen.restored.map_err(|err| fail(LAB, "restore_snapshot", err))?;
    if let Some(difference) = first_difference(&restored, &snapshot) {
        return Err(fail(
            LAB,
            "restore_snapshot",
            format!("the restored vCPU is not the snapshot's: {difference}"),
        )
        .into());
    }
    let (expected, checksum) = expected_run(params);
    let (rest, restored_checksum) = seen.restored_rest.map_err(|err| {
        fail(
            LAB,
            "restore_snapshot",
            format!("the restored guest did not run to its end: {err}"),
        )
    })?;
    if !expected.ends_with(&rest) || restored_checksum != checksum {
        return Err(fail(
            LAB,
            "restore_snapshot",
            format!(
                "the guest restored at step {} ends with checksum {restored_checksum:#018x}, an unmoved run with \
                 {checksum:#018x}: the snapshot's memory (all of it) must be in the new VM; {}",
                seen.steps_done,
                output_difference(&rest, &expected[expected.len().saturating_sub(rest.len())..])
            ),
        )
        .into());
    }
    Ok(())
}

fn dirty_log(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let params = GuestParams {
        seed: rng.next_u64(),
        dirty_rate: rng.range(5, 60),
        steps: 2000,
    };
    let seen = ctx.call(&DirtyLog {
        params,
        slice_ms: rng.range(5, 30),
    })?;
    if let Ok(pages) = &seen.without_flag {
        return Err(fail(
            LAB,
            TAKE,
            format!(
                "on a slot registered without KVM_MEM_LOG_DIRTY_PAGES it returned {} pages; KVM refuses \
                 KVM_GET_DIRTY_LOG there (ENOENT): return that error, a move must not go on without a log",
                pages.len()
            ),
        )
        .into());
    }
    seen.enabled.map_err(|err| fail(LAB, "enable_dirty_log", err))?;
    seen.first
        .map_err(|err| fail_one_of(LAB, &dirty_log_failed(&err, &[TAKE]), err))?;
    let dirty = seen
        .second
        .map_err(|err| fail_one_of(LAB, &dirty_log_failed(&err, &[TAKE]), err))?;
    if dirty.windows(2).any(|w| w[0] >= w[1]) || dirty.iter().any(|&p| p >= GUEST_PAGES) {
        return Err(fail(
            LAB,
            TAKE,
            "the page numbers must be in increasing order, each once, each below 512 (one bit per 4 KiB page of 2 MiB)",
        )
        .into());
    }
    if let Some(missing) = seen.changed.iter().find(|p| dirty.binary_search(p).is_err()) {
        return Err(fail(
            LAB,
            TAKE,
            format!(
                "page {missing} (guest physical {:#x}) changed while the guest ran, but is not in the log's {} \
                 pages: bit i of word w of the bitmap is page 64 * w + i",
                missing * 4096,
                dirty.len()
            ),
        )
        .into());
    }
    if seen.changed.is_empty() {
        return Err(fail(
            LAB,
            "run_slice",
            "the guest wrote nothing during its slice: it did not run the guest",
        )
        .into());
    }
    Ok(())
}

/// The causes of a failure whose text is `error`, `otherwise` the ones given: KVM_GET_DIRTY_LOG
/// fails with ENOENT on a slot without KVM_MEM_LOG_DIRTY_PAGES, which enable_dirty_log turns
/// on (or a take_dirty_pages that asks for another slot).
fn dirty_log_failed<'a>(error: &str, otherwise: &[&'a str]) -> Vec<&'a str> {
    if error.contains("KVM_GET_DIRTY_LOG") && error.contains("No such file or directory") {
        let mut causes = vec!["enable_dirty_log", TAKE];
        causes.extend(otherwise.iter().filter(|f| **f != TAKE));
        causes
    } else {
        otherwise.to_vec()
    }
}

/// A move's run as the judge needs it: status 0 and the guest finished on the destination.
fn moved_run(seen: &MoveSeen) -> Result<(), Stop> {
    if seen.status == Status::NotImplemented.code() {
        return Err(stub_reached(seen.failure.as_deref().unwrap_or_default()));
    }
    if seen.status != Status::Ok.code() {
        let failure = seen.failure.as_deref().unwrap_or_default();
        return Err(fail_one_of(
            LAB,
            &dirty_log_failed(failure, &["migrate"]),
            format!(
                "the move ended with status {}: {}",
                seen.status,
                seen.failure.as_deref().unwrap_or("no message")
            ),
        )
        .into());
    }
    if seen.finished_on.as_deref() != Some("destination") {
        return Err(fail(LAB, "migrate", "the guest did not finish on the destination").into());
    }
    Ok(())
}

/// The moved run printed the unmoved run's lines and checksum.
fn same_as_unmoved(seen: &MoveSeen, params: GuestParams) -> Result<(), Stop> {
    let (expected, checksum) = expected_run(params);
    if seen.checksum != Some(checksum) || seen.output != expected {
        let found = seen.checksum.map_or("none".to_owned(), |c| format!("{c:#018x}"));
        return Err(fail(
            LAB,
            "migrate",
            format!(
                "the moved guest's checksum is {found}, an unmoved run's {checksum:#018x}: a page it wrote did not \
                 arrive, or arrived stale (the stop-and-copy round sends the log read after the guest stopped, and \
                 every round sends the pages' bytes at the time of sending); {}",
                output_difference(&seen.output, &expected)
            ),
        )
        .into());
    }
    Ok(())
}

fn move_fast_writer(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let params = GuestParams {
        seed: rng.next_u64(),
        dirty_rate: rng.range(30, 90),
        steps: rng.range(500, 700),
    };
    let seen = ctx.call(&Move {
        params,
        max_rounds: rng.range(2, 6) as u32,
    })?;
    moved_run(&seen)?;
    same_as_unmoved(&seen, params)
}

fn rounds_converge(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let params = GuestParams {
        seed: rng.next_u64(),
        dirty_rate: rng.range(0, 2),
        steps: rng.range(500, 700),
    };
    let max_rounds = 8;
    let seen = ctx.call(&Move { params, max_rounds })?;
    moved_run(&seen)?;
    let first = seen.rounds.first().ok_or_else(|| {
        fail(
            LAB,
            "migrate",
            "it reported no pre-copy round: round 1 sends all memory while the guest runs",
        )
    })?;
    if first.pages != GUEST_PAGES {
        return Err(fail(
            LAB,
            "migrate",
            format!(
                "round 1 sent {} pages, expected all 512: the log reports only writes made after it was turned on",
                first.pages
            ),
        )
        .into());
    }
    for pair in seen.rounds.windows(2) {
        if pair[1].pages != pair[0].dirty_after {
            return Err(fail(
                LAB,
                "migrate",
                format!(
                    "round {} sent {} pages, but the log gave {} after round {}: send the dirty set the log gave",
                    pair[1].number, pair[1].pages, pair[0].dirty_after, pair[0].number
                ),
            )
            .into());
        }
    }
    let last = seen.rounds.last().expect("one round at least");
    let stop_copy = seen.stop_copy_pages.unwrap_or(u64::MAX);
    let total: u64 = seen.rounds.iter().map(|r| r.pages).sum::<u64>() + stop_copy.min(GUEST_PAGES);
    if stop_copy != last.dirty_after || stop_copy >= total {
        return Err(fail(
            LAB,
            "migrate",
            format!(
                "the stop-and-copy round sent {stop_copy} pages; the last log gave {}: it sends that dirty set, \
                 a small part of the {total} pages moved",
                last.dirty_after
            ),
        )
        .into());
    }
    // A guest that finished its steps during pre-copy ends the rounds whatever its dirty set (on a
    // busy host each step's wait stretches, so how far it got is the guest's, not a time's, evidence).
    let finished_in_pre_copy = seen.steps_at_stop.is_some_and(|steps| steps >= params.steps);
    if (seen.rounds.len() as u32) < max_rounds && stop_copy > seen.stop_pages && !finished_in_pre_copy {
        return Err(fail(
            LAB,
            "migrate",
            format!(
                "it stopped pre-copying after {} of {max_rounds} rounds with {stop_copy} dirty pages, above the plan's \
                 {}: stop when the dirty set is small or the rounds run out",
                seen.rounds.len(),
                seen.stop_pages
            ),
        )
        .into());
    }
    if last.dirty_after >= GUEST_PAGES {
        return Err(fail(LAB, "migrate", "the dirty set never shrank below all of memory").into());
    }
    same_as_unmoved(&seen, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_run_prints_a_line_per_100_steps_and_the_checksum() {
        let (output, checksum) = expected_run(GuestParams {
            seed: 1,
            dirty_rate: 2,
            steps: 300,
        });
        let text = String::from_utf8(output).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("step 100 running 0x"));
        assert_eq!(lines[3], format!("checksum {checksum:#018x}"));
    }
}
