//! The reference solution of lab 4 (built with `--features solution`).

use vm_memory::{Bytes, GuestAddress};

use crate::{
    CONSOLE_PORT, EXPECTED_RESULT, ExitCounts, ExitLoopError, Flow, GuestMemoryMmap, RESULT_ADDR,
    ResultError, UnexpectedExit, VcpuExit, VcpuFd, Write,
};

// ANCHOR: handle_exit
pub fn handle_exit(
    exit: VcpuExit<'_>,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
) -> Result<Flow, ExitLoopError> {
    match exit {
        VcpuExit::IoOut(CONSOLE_PORT, data) => {
            counts.io_out += 1;
            console.write_all(data).map_err(ExitLoopError::Console)?;
            return Ok(Flow::Continue);
        }
        VcpuExit::Hlt => {
            counts.hlt += 1;
            return Ok(Flow::Halt);
        }
        VcpuExit::IoOut(..) => counts.io_out += 1,
        VcpuExit::IoIn(..) => counts.io_in += 1,
        VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => counts.mmio += 1,
        VcpuExit::Shutdown => counts.shutdown += 1,
        _ => counts.other += 1,
    }
    Err(ExitLoopError::Unexpected(UnexpectedExit::from_exit(&exit)))
}
// ANCHOR_END: handle_exit

// ANCHOR: run_until_halt
pub fn run_until_halt(
    vcpu: &mut VcpuFd,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), ExitLoopError> {
    loop {
        let exit = vcpu.run().map_err(ExitLoopError::Run)?; // the guest runs here
        trace(&exit);
        if handle_exit(exit, console, counts)? == Flow::Halt {
            return Ok(());
        }
    }
}
// ANCHOR_END: run_until_halt

// ANCHOR: results
pub fn read_result_slot(memory: &GuestMemoryMmap, width: usize) -> Result<u64, ResultError> {
    let mut bytes = [0u8; 8];
    let slot = bytes.get_mut(..width).ok_or(ResultError::Unreadable {
        width,
        reason: "wider than 8 bytes".into(),
    })?;
    memory
        .read_slice(slot, GuestAddress(RESULT_ADDR))
        .map_err(|err| ResultError::Unreadable {
            width,
            reason: err.to_string(),
        })?;
    Ok(u64::from_le_bytes(bytes))
}

pub fn check_results(rax: u64, memory_value: u64) -> Result<(), ResultError> {
    if rax != EXPECTED_RESULT {
        return Err(ResultError::Rax(rax));
    }
    if memory_value != EXPECTED_RESULT {
        return Err(ResultError::Memory(memory_value));
    }
    Ok(())
}
// ANCHOR_END: results
