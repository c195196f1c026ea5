//! What a run prints: the one-line summary on stderr and the `--json` report.

use std::io::Write;

use kit_common::{Mode, Status};
use serde_json::{Value, json};

use crate::vmm::RunReport;

/// Prints `kvm-hello: <line>` on stderr. A closed stderr loses the line instead of panicking
/// (the `kvm-hello` binary ends by SIGPIPE there; see `main.rs`).
pub fn print_summary_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "kvm-hello: {line}");
}

/// Writes `text` to stdout and flushes it; a closed stdout loses it instead of panicking.
pub fn print_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// The status a report ends with.
pub fn status(report: &RunReport) -> Status {
    report.failure.as_ref().map_or(Status::Ok, |failure| failure.status)
}

/// The one-line summary: what the guest did, or why the run failed.
pub fn summary(report: &RunReport) -> String {
    match (&report.failure, &report.schedule) {
        (Some(failure), _) => failure.message.clone(),
        (None, Some(schedule)) => crate::vmm::schedule_summary(schedule),
        (None, None) if report.migration.is_some() => {
            crate::vmm::migrate_summary(report.migration.as_ref().expect("checked"))
        }
        (None, None) => {
            let c = &report.counts;
            let halted = format!("guest halted after {} exits (io {}, hlt {})", c.total(), c.io(), c.hlt);
            match (report.rax, report.memory_0x400) {
                (Some(rax), Some(memory)) => format!("{halted}; rax = {rax}, memory[0x400] = {memory}"),
                _ => halted,
            }
        }
    }
}

/// The name of a status in the JSON report's `error.kind`.
pub fn kind(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::WrongResult => "wrong_result",
        Status::BadInput => "bad_input",
        Status::KvmUnavailable => "kvm_unavailable",
        Status::GuestFault => "guest_fault",
        Status::Timeout => "timeout",
        Status::NotImplemented => "not_implemented",
        Status::LabPanicked => "lab_panicked",
        Status::MigrationFailed => "migration_failed",
    }
}

/// The `--json` report (the contract in the README and the book).
pub fn json(mode: Mode, lab: Option<crate::cli::ExtraLab>, report: &RunReport) -> Value {
    let c = &report.counts;
    let status = status(report);
    let mut value = json!({
        "mode": mode.name(),
        "output": String::from_utf8_lossy(&report.output),
        "exits": {
            "total": c.total(),
            "io": c.io(),
            "io_out": c.io_out,
            "io_in": c.io_in,
            "hlt": c.hlt,
            "mmio": c.mmio,
            "shutdown": c.shutdown,
            "other": c.other,
        },
        "rax": report.rax,
        "rip": report.rip,
        "memory_0x400": report.memory_0x400,
        "memory_host_base": report.memory_host_base,
        "kvm_run": report.kvm_run.map(|run| json!({"address": run.address, "size": run.size})),
        "ok": status == Status::Ok,
        "status": status.code(),
    });
    if let Some(lab) = lab {
        value["lab"] = Value::from(lab.name());
        value["mode"] = Value::from(match lab {
            crate::cli::ExtraLab::Lwn => "real",
            crate::cli::ExtraLab::Hypercalls | crate::cli::ExtraLab::Schedule | crate::cli::ExtraLab::Migrate => "long",
        });
    }
    if let Some(schedule) = &report.schedule {
        value["schedule"] = schedule_json(schedule);
    }
    if let Some(migration) = &report.migration {
        value["migration"] = migration_json(migration);
    }
    if let Some(records) = &report.hypercalls {
        let calls: Vec<Value> = records
            .iter()
            .map(|r| {
                let mut call = json!({"name": r.name, "args": r.args, "result": r.result});
                if r.name == "gva_to_hva" {
                    call["gva"] = Value::from(r.args.first().copied());
                    call["hva"] = Value::from(r.result);
                }
                call
            })
            .collect();
        value["hypercalls"] = Value::from(calls);
    }
    if let Some(failure) = &report.failure {
        value["error"] = json!({"kind": kind(status), "message": failure.message});
    }
    value
}

/// Microseconds, for the slices.
fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `schedule` in the `--json` report of `--lab schedule`: the policy, each VM's totals and
/// measured share, and every slice (times in microseconds; `start` from the loop's start).
fn schedule_json(schedule: &crate::vmm::ScheduleReport) -> Value {
    use lab6_scheduling::{Policy, SliceEnd};
    let (quantum, shares) = match schedule.policy {
        Policy::Cooperative => (None, None),
        Policy::RoundRobin { quantum } => (Some(quantum), None),
        Policy::Weighted { quantum, shares } => (Some(quantum), Some(shares)),
    };
    let vms: Vec<Value> = (0..2)
        .map(|i| {
            let account = &schedule.accounts[i];
            json!({
                "name": char::from(schedule.names[i]).to_string(),
                "guest_time_us": micros(account.guest_time),
                "slices": account.slices,
                "exits": account.exits.total(),
                "progress": account.progress,
                "share": schedule.share(i),
            })
        })
        .collect();
    let slices: Vec<Value> = schedule
        .slices
        .iter()
        .map(|slice| {
            json!({
                "vm": slice.vm,
                "start_us": micros(slice.start),
                "wall_us": micros(slice.wall),
                "guest_us": micros(slice.guest),
                "exits": slice.exits,
                "progress": slice.progress,
                "ended_by": match slice.ended_by {
                    SliceEnd::Timer => "timer",
                    SliceEnd::Console => "console",
                },
            })
        })
        .collect();
    json!({
        "policy": schedule.policy.name(),
        "quantum_us": quantum.map(micros),
        "shares": shares,
        "duration_us": micros(schedule.duration),
        "wall_us": micros(schedule.wall),
        "cpu_us": micros(schedule.cpu),
        "vms": vms,
        "slices": slices,
    })
}

/// `migration` in the `--json` report of `--lab migrate`: the guest's parameters, the plan, every
/// pre-copy round, the stop-and-copy round, the downtime (times in microseconds), where the guest
/// finished and its checksum, and why the move failed if it did.
fn migration_json(record: &crate::vmm::MigrateReport) -> Value {
    let params = &record.options.params;
    let rounds: Vec<Value> = record
        .migration
        .iter()
        .flat_map(|m| m.rounds.iter())
        .map(|round| {
            json!({
                "round": round.number,
                "pages": round.pages,
                "send_us": micros(round.send_time),
                "guest_us": micros(round.guest_time),
                "dirty_after": round.dirty_after,
            })
        })
        .collect();
    json!({
        "seed": params.seed,
        "dirty_rate": params.dirty_rate,
        "steps": params.steps,
        "max_rounds": record.plan.max_rounds,
        "stop_pages": record.plan.stop_pages,
        "guest_pages": lab7_migration::GUEST_PAGES,
        "moved": record.migration.is_some(),
        "rounds": rounds,
        "stop_copy_pages": record.migration.as_ref().map(|m| m.stop_copy_pages),
        "total_pages": record.migration.as_ref().map(|m| m.total_pages()),
        "downtime_us": record.migration.as_ref().map(|m| micros(m.downtime)),
        "finished_on": record.finished_on,
        "checksum": record.checksum.map(|c| format!("{c:#018x}")),
        "steps_at_stop": record.steps_at_stop,
        "error": record.error,
    })
}

/// The JSON report of a run that could not start (bad usage or input).
pub fn json_of_failure(mode: Mode, status: Status, message: &str) -> Value {
    json!({
        "mode": mode.name(),
        "ok": false,
        "status": status.code(),
        "error": {"kind": kind(status), "message": message},
    })
}
