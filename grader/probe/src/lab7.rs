//! Lab 7: the migration guest snapshotted, restored, logged and moved, with the lab's functions.

use std::time::Duration;

use grader_protocol::lab7::{
    DirtyLog, DirtyLogSeen, Fpu, GuestParams, Move, MoveSeen, RoundSeen, RoundTrip, RoundTripSeen, VcpuSeen,
};
use grader_protocol::{Envelope, Outcome, Request};
use kvm_hello::cli::MigrateOptions;
use lab7_migration::{GUEST_MEMORY_SIZE, GuestVm, PAGE_SIZE, Params, SliceEnd, SliceTimer, VcpuState};
use vm_memory::{Bytes, GuestAddress};

use crate::{Handled, Labs, Probe, handle};

/// A slice while the guest is brought to a given step.
const STEP_SLICE: Duration = Duration::from_millis(10);
/// A slice while the guest runs to its end.
const END_SLICE: Duration = Duration::from_millis(50);
/// The most guest time a run to the end may take (the checks' guests need well under a second).
const MAX_GUEST_TIME: Duration = Duration::from_secs(20);
/// The watchdog's budget of a move (kvm-hello's `--timeout`).
const MOVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Answers lab 7's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let labs = &probe.labs;
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        RoundTrip::NAME => handle(body, |request: RoundTrip| round_trip(labs, &request)),
        DirtyLog::NAME => handle(body, |request: DirtyLog| dirty_log(labs, &request)),
        Move::NAME => handle(body, |request: Move| Ok(move_guest(labs, &request))),
        _ => return None,
    })
}

fn params(p: GuestParams) -> Params {
    Params {
        seed: p.seed,
        dirty_rate: p.dirty_rate,
        steps: p.steps,
    }
}

/// The guest in a VM built by the lab's labs 1 to 3 and lab 6 (they pass before lab 7 is graded).
fn create(labs: &Labs, p: GuestParams) -> Result<GuestVm, String> {
    lab7_migration::create_vm(labs.create_guest_vm, &labs.base(), guests::MIGRATE64, &params(p))
        .map_err(|err| format!("the migration guest's VM could not be built with labs 1 to 3 and lab 6: {err}"))
}

/// Runs slices until the guest has done `steps` steps.
fn run_to_step(labs: &Labs, guest: &mut GuestVm, timer: &mut SliceTimer, steps: u64) -> Outcome<u64> {
    let mut ran = Duration::ZERO;
    loop {
        let done = lab7_migration::read_progress(&guest.vm.memory).map_err(|e| e.to_string())?;
        if done >= steps || guest.halted {
            return Ok(done);
        }
        if ran >= MAX_GUEST_TIME {
            return Err(format!(
                "the guest did only {done} steps in {} s of slices",
                ran.as_secs()
            ));
        }
        (labs.migration_run_slice)(guest, Some(STEP_SLICE), timer, &mut std::io::sink()).map_err(|e| e.to_string())?;
        ran += STEP_SLICE;
    }
}

/// Runs the guest to its end in slices; its output and checksum.
fn run_rest(labs: &Labs, guest: &mut GuestVm, timer: &mut SliceTimer) -> Outcome<(Vec<u8>, u64)> {
    let mut output = Vec::new();
    let mut ran = Duration::ZERO;
    while ran < MAX_GUEST_TIME {
        let ended =
            (labs.migration_run_slice)(guest, Some(END_SLICE), timer, &mut output).map_err(|e| e.to_string())?;
        if ended == SliceEnd::Halted {
            let checksum = lab7_migration::read_checksum(&guest.vm.memory).map_err(|e| e.to_string())?;
            return Ok((output, checksum));
        }
        ran += END_SLICE;
    }
    Err(format!(
        "the guest did not halt within {} s of slices",
        MAX_GUEST_TIME.as_secs()
    ))
}

fn seen(state: &VcpuState) -> VcpuSeen {
    let fpu = &state.fpu;
    VcpuSeen {
        regs: state.regs,
        sregs: state.sregs,
        fpu: Fpu {
            fpr: fpu.fpr.iter().map(|r| r.to_vec()).collect(),
            fcw: fpu.fcw,
            fsw: fpu.fsw,
            ftwx: fpu.ftwx,
            last_opcode: fpu.last_opcode,
            last_ip: fpu.last_ip,
            last_dp: fpu.last_dp,
            xmm: fpu.xmm.iter().map(|r| r.to_vec()).collect(),
            mxcsr: fpu.mxcsr,
        },
    }
}

fn round_trip(labs: &Labs, request: &RoundTrip) -> Result<RoundTripSeen, String> {
    let mut timer = SliceTimer::new().map_err(|err| format!("the slice timer: {err}"))?;
    let mut original = create(labs, request.params)?;
    let steps_done = match run_to_step(labs, &mut original, &mut timer, request.steps_before) {
        Ok(done) => done,
        Err(why) => {
            return Err(format!(
                "the guest could not be brought to step {}: {why}",
                request.steps_before
            ));
        }
    };
    let snapshot = (labs.snapshot)(&original).map_err(|e| e.to_string());
    let mut restored = snapshot
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|s| (labs.restore_snapshot)(&labs.base(), s).map_err(|e| e.to_string()));
    let restored_state = restored
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|guest| (labs.save_vcpu)(&guest.vcpu).map_err(|e| format!("save_vcpu of the restored VM: {e}")));
    let original_rest = run_rest(labs, &mut original, &mut timer);
    let restored_rest = match restored.as_mut() {
        Ok(guest) => run_rest(labs, guest, &mut timer),
        Err(why) => Err(why.clone()),
    };
    Ok(RoundTripSeen {
        steps_done,
        snapshot: snapshot.map(|s| seen(&s.vcpu)),
        restored: restored_state.map(|s| seen(&s)),
        original_rest,
        restored_rest,
    })
}

/// Guest memory, page by page.
fn pages(guest: &GuestVm) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; GUEST_MEMORY_SIZE];
    guest
        .vm
        .memory
        .read_slice(&mut bytes, GuestAddress(0))
        .map_err(|err| format!("cannot read guest memory: {err}"))?;
    Ok(bytes)
}

fn dirty_log(labs: &Labs, request: &DirtyLog) -> Result<DirtyLogSeen, String> {
    let mut timer = SliceTimer::new().map_err(|err| format!("the slice timer: {err}"))?;
    let mut guest = create(labs, request.params)?;
    run_to_step(labs, &mut guest, &mut timer, 3).map_err(|why| format!("the guest did not start: {why}"))?;
    let without_flag = (labs.take_dirty_pages)(&guest.vm).map_err(|e| e.to_string());
    let enabled = (labs.enable_dirty_log)(&guest.vm).map_err(|e| e.to_string());
    let first = (labs.take_dirty_pages)(&guest.vm).map_err(|e| e.to_string());
    let before = pages(&guest)?;
    let slice = Duration::from_millis(request.slice_ms);
    (labs.migration_run_slice)(&mut guest, Some(slice), &mut timer, &mut std::io::sink())
        .map_err(|err| format!("run_slice failed between the two reads: {err}"))?;
    let after = pages(&guest)?;
    let second = (labs.take_dirty_pages)(&guest.vm).map_err(|e| e.to_string());
    let changed = before
        .chunks(PAGE_SIZE)
        .zip(after.chunks(PAGE_SIZE))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(page, _)| page as u64)
        .collect();
    Ok(DirtyLogSeen {
        without_flag,
        enabled,
        first,
        second,
        changed,
    })
}

fn move_guest(labs: &Labs, request: &Move) -> MoveSeen {
    let options = MigrateOptions {
        params: params(request.params),
        max_rounds: request.max_rounds,
        no_migration: false,
        kill_destination: None,
    };
    let report = kvm_hello::vmm::run_migrate(*labs, options, kvm_hello::vmm::Where::Thread, true, MOVE_TIMEOUT);
    let record = report.migration.as_ref();
    let migration = record.and_then(|r| r.migration.as_ref());
    MoveSeen {
        status: kvm_hello::report::status(&report).code(),
        failure: report.failure.as_ref().map(|f| f.message.clone()),
        output: report.output.clone(),
        rounds: migration
            .map(|m| {
                m.rounds
                    .iter()
                    .map(|r| RoundSeen {
                        number: r.number,
                        pages: r.pages as u64,
                        dirty_after: r.dirty_after as u64,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        stop_copy_pages: migration.map(|m| m.stop_copy_pages as u64),
        stop_pages: record.map_or(0, |r| r.plan.stop_pages as u64),
        downtime_us: migration.map(|m| u64::try_from(m.downtime.as_micros()).unwrap_or(u64::MAX)),
        finished_on: record.and_then(|r| r.finished_on.map(str::to_owned)),
        checksum: record.and_then(|r| r.checksum),
        steps_at_stop: record.and_then(|r| r.steps_at_stop),
    }
}
