//! The reference solution of lab 5 (built with `--features solution`).

// ANCHOR: imports
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::{
    AddressError, EXITS_BY_TYPE_PORT, ExitCounts, Flow, GVA_TO_HVA_PORT, GuestMemoryMmap, Host, Lab5Error, MAX_STRING,
    NUM_EXITS_PORT, PRINT_STR_PORT, PRINT8_PORT, PRINT32_PORT, REPORT_ADDR, UnexpectedExit, VcpuExit, VcpuFd, Write,
};
// ANCHOR_END: imports

// ANCHOR: helpers
/// The page granularity at which a string is translated: safe for 4 KiB, 2 MiB and 1 GiB pages.
const PAGE: u64 = 0x1000;
// ANCHOR_END: helpers

// ANCHOR: read_guest_string
pub fn read_guest_string(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Result<Vec<u8>, Lab5Error> {
    let bad = |reason: AddressError| Lab5Error::BadAddress {
        call: "print_str",
        gva,
        reason,
    };
    let mut bytes = Vec::new();
    let mut at = gva;
    while bytes.len() <= MAX_STRING {
        let gpa = lab2_paging::translate(memory, cr3, at)
            .result
            .map_err(|fault| bad(fault.into()))?;
        let in_page = (PAGE - at % PAGE) as usize;
        let mut chunk = vec![0u8; in_page.min(MAX_STRING + 1 - bytes.len())];
        memory
            .read_slice(&mut chunk, GuestAddress(gpa))
            .map_err(|err| bad(err.into()))?;
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&chunk[..nul]);
            return Ok(bytes);
        }
        bytes.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Err(bad(AddressError::Unterminated))
}
// ANCHOR_END: read_guest_string

// ANCHOR: write_exit_report
pub fn write_exit_report(memory: &GuestMemoryMmap, counts: &ExitCounts) -> Result<u64, Lab5Error> {
    let report = format!("IO in: {}\nIO out: {}\n\0", counts.io_in, counts.io_out);
    memory
        .write_slice(report.as_bytes(), GuestAddress(REPORT_ADDR))
        .map_err(|err| Lab5Error::BadAddress {
            call: "num_exits_by_type",
            gva: REPORT_ADDR,
            reason: err.into(),
        })?;
    Ok(REPORT_ADDR)
}
// ANCHOR_END: write_exit_report

// ANCHOR: gva_to_hva
pub fn gva_to_hva(memory: &GuestMemoryMmap, cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
    let gpa = lab2_paging::translate(memory, cr3, gva).result.ok()?;
    // A page table may map any physical address: vm-memory says whether it is guest memory.
    memory.get_host_address(GuestAddress(gpa)).ok()?;
    host_base.checked_add(gpa)
}
// ANCHOR_END: gva_to_hva

// ANCHOR: u32_of
fn u32_of(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.try_into().ok()?))
}
// ANCHOR_END: u32_of

// ANCHOR: handle_hypercall
pub fn handle_hypercall(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
    let unexpected = |exit: &VcpuExit<'_>| Lab5Error::Unexpected(UnexpectedExit::from_exit(exit));
    match exit {
        VcpuExit::Hlt => {
            host.counts.hlt += 1;
            Ok(Flow::Halt)
        }
        VcpuExit::IoOut(port, data) => {
            host.counts.io_out += 1;
            let out = match (port, data.len()) {
                (PRINT8_PORT, 1) => {
                    host.record("print8bit", &[data[0].into()], None);
                    data.to_vec()
                }
                (PRINT32_PORT, 4) => {
                    let value = u32_of(data).unwrap_or_default();
                    host.record("print32bit", &[value.into()], None);
                    format!("{value}\n").into_bytes()
                }
                (PRINT_STR_PORT, 4) => {
                    let gva = u32_of(data).unwrap_or_default().into();
                    host.record("print_str", &[gva], None);
                    read_guest_string(host.memory, host.cr3, gva)?
                }
                (GVA_TO_HVA_PORT, 4) => {
                    let slot = u64::from(u32_of(data).unwrap_or_default());
                    let bad = |err: vm_memory::GuestMemoryError| Lab5Error::BadAddress {
                        call: "gva_to_hva",
                        gva: slot,
                        reason: err.into(),
                    };
                    let slot_gpa = lab2_paging::translate(host.memory, host.cr3, slot)
                        .result
                        .map_err(|fault| Lab5Error::BadAddress {
                            call: "gva_to_hva",
                            gva: slot,
                            reason: fault.into(),
                        })?;
                    let gva: u64 = host.memory.read_obj(GuestAddress(slot_gpa)).map_err(bad)?;
                    let hva = gva_to_hva(host.memory, host.cr3, host.host_base, gva);
                    host.memory
                        .write_obj(hva.unwrap_or(0), GuestAddress(slot_gpa))
                        .map_err(bad)?;
                    host.record("gva_to_hva", &[gva], Some(hva.unwrap_or(0)));
                    if hva.is_some() {
                        Vec::new()
                    } else {
                        b"Invalid GVA\n".to_vec()
                    }
                }
                _ => return Err(unexpected(&VcpuExit::IoOut(port, data))),
            };
            console.write_all(&out).map_err(Lab5Error::Console)?;
            Ok(Flow::Continue)
        }
        VcpuExit::IoIn(port, data) => {
            host.counts.io_in += 1;
            let answer = match (port, data.len()) {
                (NUM_EXITS_PORT, 4) => {
                    let exits = host.counts.total() as u32;
                    host.record("num_exits", &[], Some(exits.into()));
                    exits
                }
                (EXITS_BY_TYPE_PORT, 4) => {
                    let addr = write_exit_report(host.memory, &host.counts)?;
                    host.record("num_exits_by_type", &[], Some(addr));
                    addr as u32
                }
                _ => return Err(unexpected(&VcpuExit::IoIn(port, data))),
            };
            data.copy_from_slice(&answer.to_le_bytes());
            Ok(Flow::Continue)
        }
        other => {
            match other {
                VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => host.counts.mmio += 1,
                VcpuExit::Shutdown => host.counts.shutdown += 1,
                _ => host.counts.other += 1,
            }
            Err(unexpected(&other))
        }
    }
}
// ANCHOR_END: handle_hypercall

// ANCHOR: run_hypercalls
pub fn run_hypercalls(
    vcpu: &mut VcpuFd,
    host: &mut Host<'_>,
    console: &mut dyn Write,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), Lab5Error> {
    loop {
        let exit = vcpu.run().map_err(Lab5Error::Run)?;
        trace(&exit);
        if handle_hypercall(exit, host, console)? == Flow::Halt {
            return Ok(());
        }
    }
}
// ANCHOR_END: run_hypercalls
