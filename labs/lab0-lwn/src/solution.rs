//! The reference solution of lab 0 (built with `--features solution`).

// ANCHOR: imports
use kvm_bindings::kvm_userspace_memory_region;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::{
    CODE, CODE_ADDR, ExitCounts, GuestMemoryMmap, KVM_API_VERSION, Kvm, Lab0Error, LwnVm, PAGE_SIZE, SERIAL_PORT,
    UnexpectedExit, VcpuExit, VcpuFd, Write,
};
// ANCHOR_END: imports

// ANCHOR: create_vm
pub fn create_vm() -> Result<LwnVm, Lab0Error> {
    let kvm = Kvm::new().map_err(Lab0Error::OpenKvm)?;
    if kvm.get_api_version() != KVM_API_VERSION {
        return Err(Lab0Error::ApiVersion(kvm.get_api_version()));
    }
    let fd = kvm.create_vm().map_err(|source| Lab0Error::Ioctl {
        ioctl: "KVM_CREATE_VM",
        source,
    })?;
    let memory =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(CODE_ADDR), PAGE_SIZE)]).map_err(Lab0Error::Allocate)?;
    memory
        .write_slice(&CODE, GuestAddress(CODE_ADDR))
        .map_err(Lab0Error::Memory)?;
    let host = memory
        .get_host_address(GuestAddress(CODE_ADDR))
        .map_err(Lab0Error::Memory)?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: CODE_ADDR,
        memory_size: PAGE_SIZE as u64,
        userspace_addr: host as u64,
    };
    // SAFETY: the region is `memory`'s own page. `LwnVm` drops `fd` before `memory` (field
    // order), and its callers drop the vCPU before the `LwnVm` (kvm-hello does, in `lwn_session`),
    // so the guest never runs once the page is gone. If the ioctl fails, nothing was registered.
    unsafe { fd.set_user_memory_region(region) }.map_err(|source| Lab0Error::Ioctl {
        ioctl: "KVM_SET_USER_MEMORY_REGION",
        source,
    })?;
    Ok(LwnVm { kvm, fd, memory })
}
// ANCHOR_END: create_vm

// ANCHOR: setup_vcpu
pub fn setup_vcpu(vm: &LwnVm) -> Result<VcpuFd, Lab0Error> {
    let ioctl = |ioctl| move |source| Lab0Error::Ioctl { ioctl, source };
    let vcpu = vm.fd.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    regs.rip = CODE_ADDR;
    regs.rax = 2;
    regs.rbx = 2;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
    Ok(vcpu)
}
// ANCHOR_END: setup_vcpu

// ANCHOR: run
pub fn run(
    vcpu: &mut VcpuFd,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), Lab0Error> {
    loop {
        let exit = vcpu.run().map_err(Lab0Error::Run)?;
        trace(&exit);
        match exit {
            VcpuExit::IoOut(SERIAL_PORT, data) => {
                counts.io_out += 1;
                console.write_all(data).map_err(Lab0Error::Console)?;
            }
            VcpuExit::Hlt => {
                counts.hlt += 1;
                return Ok(());
            }
            other => {
                match other {
                    VcpuExit::IoOut(..) => counts.io_out += 1,
                    VcpuExit::IoIn(..) => counts.io_in += 1,
                    VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => counts.mmio += 1,
                    VcpuExit::Shutdown => counts.shutdown += 1,
                    _ => counts.other += 1,
                }
                return Err(Lab0Error::Unexpected(UnexpectedExit::from_exit(&other)));
            }
        }
    }
}
// ANCHOR_END: run
