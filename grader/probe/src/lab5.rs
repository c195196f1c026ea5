//! Lab 5: the lab's hypercall functions on the judge's made-up exits and memory, and the judge's
//! guests run as `kvm-hello --lab hypercalls` runs them. Everything goes back as observed.

use std::time::Duration;

use grader_protocol::lab5::{
    Counts, Exit, ExitReportSeen, Flow, GvaToHva, HypercallRun, Memory, ReadStrings, Record, RunHypercallGuest, Serve,
    Served, StringRead, WriteExitReport,
};
use grader_protocol::{Envelope, Request};
use kit_common::Mode;
use kvm_hello::vmm::{self, Program, RunConfig};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::ExitCounts;
use lab5_hypercalls::{Host, Lab5Error};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{Handled, Probe, handle, memory};

/// Answers lab 5's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let labs = &probe.labs;
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        Serve::NAME => handle(body, |request: Serve| serve(probe, request)),
        ReadStrings::NAME => handle(body, |request: ReadStrings| {
            let memory = prepared(&request.memory)?;
            Ok(request
                .gvas
                .iter()
                .map(|&gva| match (labs.read_guest_string)(&memory, request.cr3, gva) {
                    Ok(bytes) => StringRead::Read(bytes),
                    Err(err @ Lab5Error::BadAddress { .. }) => StringRead::BadAddress(err.to_string()),
                    Err(err) => StringRead::OtherError(err.to_string()),
                })
                .collect())
        }),
        GvaToHva::NAME => handle(body, |request: GvaToHva| {
            let memory = prepared(&request.memory)?;
            Ok(request
                .gvas
                .iter()
                .map(|&gva| (labs.gva_to_hva)(&memory, request.cr3, request.host_base, gva))
                .collect())
        }),
        WriteExitReport::NAME => handle(body, |request: WriteExitReport| {
            let memory = memory::fresh()?;
            let returned = (labs.write_exit_report)(&memory, &exit_counts(request.counts)).map_err(|e| e.to_string());
            let (at, len) = request.read;
            Ok(ExitReportSeen {
                returned,
                bytes: read(&memory, at, len).unwrap_or_default(),
            })
        }),
        RunHypercallGuest::NAME => handle(body, |request: RunHypercallGuest| Ok(run_guest(probe, request))),
        _ => return None,
    })
}

/// Fresh guest memory with the judge's words and bytes written.
fn prepared(request: &Memory) -> Result<GuestMemoryMmap, String> {
    let memory = memory::fresh()?;
    memory::fill(&memory, &request.words)?;
    for (addr, bytes) in &request.bytes {
        memory
            .write_slice(bytes, GuestAddress(*addr))
            .map_err(|err| format!("cannot write {addr:#x}: {err}"))?;
    }
    Ok(memory)
}

fn read(memory: &GuestMemoryMmap, at: u64, len: u64) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    memory.read_slice(&mut bytes, GuestAddress(at)).ok()?;
    Some(bytes)
}

fn exit_counts(c: Counts) -> ExitCounts {
    ExitCounts {
        io_out: c.io_out,
        io_in: c.io_in,
        hlt: c.hlt,
        mmio: c.mmio,
        shutdown: c.shutdown,
        other: c.other,
    }
}

fn counts(c: &ExitCounts) -> Counts {
    Counts {
        io_out: c.io_out,
        io_in: c.io_in,
        hlt: c.hlt,
        mmio: c.mmio,
        shutdown: c.shutdown,
        other: c.other,
    }
}

fn serve(probe: &Probe, request: Serve) -> Result<Served, String> {
    let memory = prepared(&request.memory)?;
    let mut host = Host::new(&memory, request.cr3, request.host_base);
    host.counts = exit_counts(request.counts);
    let mut console = Vec::new();
    let mut in_data = Vec::new();
    let handle_hypercall = probe.labs.handle_hypercall;
    let flow = match &request.exit {
        Exit::Out { port, data } => handle_hypercall(VcpuExit::IoOut(*port, data), &mut host, &mut console),
        Exit::In { port, size } => {
            in_data = vec![0u8; *size];
            handle_hypercall(VcpuExit::IoIn(*port, &mut in_data), &mut host, &mut console)
        }
        Exit::Hlt => handle_hypercall(VcpuExit::Hlt, &mut host, &mut console),
        Exit::Mmio { addr, len, write } => {
            let mut data = [0u8; 8];
            let data = &mut data[..(*len).min(8)];
            if *write {
                handle_hypercall(VcpuExit::MmioWrite(*addr, data), &mut host, &mut console)
            } else {
                handle_hypercall(VcpuExit::MmioRead(*addr, data), &mut host, &mut console)
            }
        }
        Exit::Shutdown => handle_hypercall(VcpuExit::Shutdown, &mut host, &mut console),
        Exit::Other => handle_hypercall(VcpuExit::IrqWindowOpen, &mut host, &mut console),
    };
    let flow = flow
        .map(|flow| match flow {
            lab4_exit_loop::Flow::Halt => Flow::Halt,
            lab4_exit_loop::Flow::Continue => Flow::Continue,
        })
        .map_err(|err| err.to_string());
    let records = host
        .records
        .iter()
        .map(|r| Record {
            name: r.name.to_owned(),
            args: r.args.clone(),
            result: r.result,
        })
        .collect();
    Ok(Served {
        flow,
        console,
        counts: counts(&host.counts),
        records,
        in_data,
        reads: request.reads.iter().map(|&(at, len)| read(&memory, at, len)).collect(),
    })
}

/// The judge's guest run as `kvm-hello --lab hypercalls --guest IMAGE` runs it, in this process:
/// the lab functions on a vCPU thread under kvm-hello's watchdog (`timeout_ms` of vCPU time, a
/// wall-clock backstop above it), so a loop that never returns is stopped and named.
fn run_guest(probe: &Probe, request: RunHypercallGuest) -> HypercallRun {
    let report = vmm::run(RunConfig {
        labs: probe.labs,
        mode: Mode::Long,
        image: request.image,
        capture_output: true,
        trace: false,
        timeout: Duration::from_millis(request.timeout_ms),
        explain_walk: None,
        program: Program::Hypercalls,
    });
    let (status, message) = report
        .failure
        .as_ref()
        .map_or((0, String::new()), |f| (f.status.code(), f.message.clone()));
    HypercallRun {
        status,
        message,
        output: report.output,
        counts: counts(&report.counts),
        memory_host_base: report.memory_host_base,
        rax: report.rax,
        memory_0x400: report.memory_0x400,
    }
}
