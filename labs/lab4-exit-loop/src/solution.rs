//! The reference solution of lab 4 (built with `--features solution`).

// ANCHOR: imports
use vm_memory::{Bytes, GuestAddress};

use crate::{
    CONSOLE_PORT, EXPECTED_RESULT, ExitCounts, ExitLoopError, Flow, GuestMemoryMmap, RESULT_ADDR, ResultError,
    UnexpectedExit, VcpuExit, VcpuFd, Write,
};
// ANCHOR_END: imports

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
    let slot = bytes.get_mut(..width).ok_or(ResultError::TooWide { width })?;
    memory
        .read_slice(slot, GuestAddress(RESULT_ADDR))
        .map_err(|source| ResultError::Unreadable { width, source })?;
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

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    #[test]
    fn console_bytes_are_written_whole_and_counted_once_per_exit() {
        let (mut out, mut counts) = (Vec::new(), ExitCounts::default());
        let flow = handle_exit(VcpuExit::IoOut(0xE9, b"Hell"), &mut out, &mut counts).unwrap();
        assert_eq!((flow, out.as_slice(), counts.io_out), (Flow::Continue, &b"Hell"[..], 1));
        assert_eq!(handle_exit(VcpuExit::Hlt, &mut out, &mut counts).unwrap(), Flow::Halt);
        assert_eq!((counts.total(), counts.io(), counts.hlt), (2, 1, 1));
    }

    #[test]
    fn other_exits_are_counted_and_refused() {
        let (mut out, mut counts) = (Vec::new(), ExitCounts::default());
        let mut data = [0u8; 1];
        let cases = [
            (
                VcpuExit::IoOut(0x3f8, b"x"),
                UnexpectedExit::IoOut { port: 0x3f8, len: 1 },
            ),
            (
                VcpuExit::IoIn(0xE9, &mut data),
                UnexpectedExit::IoIn { port: 0xE9, len: 1 },
            ),
            (VcpuExit::Shutdown, UnexpectedExit::Shutdown),
        ];
        for (exit, expected) in cases {
            match handle_exit(exit, &mut out, &mut counts) {
                Err(ExitLoopError::Unexpected(found)) => assert_eq!(found, expected),
                other => panic!("expected {expected:?}, got {other:?}"),
            }
        }
        assert_eq!(
            (counts.io_out, counts.io_in, counts.shutdown, counts.total()),
            (1, 1, 1, 3)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn the_result_slot_is_read_at_its_width() {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        memory
            .write_obj::<u64>(0x1122_3344_0000_002a, GuestAddress(RESULT_ADDR))
            .unwrap();
        assert_eq!(read_result_slot(&memory, 2).unwrap(), 42);
        assert_eq!(read_result_slot(&memory, 4).unwrap(), 42);
        assert_eq!(read_result_slot(&memory, 8).unwrap(), 0x1122_3344_0000_002a);
        assert!(read_result_slot(&memory, 9).is_err());
    }

    #[test]
    fn both_42s_are_checked() {
        assert_eq!(check_results(42, 42), Ok(()));
        assert_eq!(check_results(41, 42), Err(ResultError::Rax(41)));
        assert_eq!(check_results(42, 0), Err(ResultError::Memory(0)));
    }
}
