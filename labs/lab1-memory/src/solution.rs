//! The reference solution of lab 1 (built with `--features solution`).

// ANCHOR: imports
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{
    GUEST_LOAD_ADDR, GUEST_MEMORY_SLOT, KVM_API_VERSION, KvmRunMapping, Lab1Error, MAX_IMAGE_SIZE, TSS_ADDRESS,
    VCPU_ID, Vcpu, Vm,
};
// ANCHOR_END: imports

// ANCHOR: vm_init
pub fn vm_init(mem_size: usize) -> Result<Vm, Lab1Error> {
    let kvm = Kvm::new().map_err(Lab1Error::OpenKvm)?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(Lab1Error::ApiVersion(version));
    }
    let fd = kvm.create_vm().map_err(|source| Lab1Error::Ioctl {
        ioctl: "KVM_CREATE_VM",
        source,
    })?;
    fd.set_tss_address(TSS_ADDRESS).map_err(|source| Lab1Error::Ioctl {
        ioctl: "KVM_SET_TSS_ADDR",
        source,
    })?;

    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(GUEST_LOAD_ADDR), mem_size)])
        .map_err(|source| Lab1Error::Memory { size: mem_size, source })?;
    let region = kvm_userspace_memory_region {
        slot: GUEST_MEMORY_SLOT,
        flags: 0,
        guest_phys_addr: GUEST_LOAD_ADDR,
        memory_size: mem_size as u64,
        userspace_addr: guest_memory_host_address(&memory),
    };
    // SAFETY: the region is `memory`'s own mapping of `mem_size` bytes. `Vm` keeps `memory` alive
    // as long as the VM: `fd` is declared (so dropped) before `memory`, and every `Vcpu` borrows
    // the `Vm`, so no vCPU runs after the memory is gone. If the ioctl fails, nothing was registered.
    unsafe { fd.set_user_memory_region(region) }.map_err(|source| Lab1Error::Ioctl {
        ioctl: "KVM_SET_USER_MEMORY_REGION",
        source,
    })?;
    Ok(Vm { kvm, fd, memory })
}
// ANCHOR_END: vm_init

// ANCHOR: vcpu_init
pub fn vcpu_init(vm: &Vm) -> Result<Vcpu<'_>, Lab1Error> {
    let fd = vm.fd.create_vcpu(VCPU_ID).map_err(|source| Lab1Error::Ioctl {
        ioctl: "KVM_CREATE_VCPU",
        source,
    })?;
    Ok(Vcpu {
        fd,
        run_size: vm.fd.run_size(),
        vm,
    })
}
// ANCHOR_END: vcpu_init

// ANCHOR: load_image
pub fn load_image(memory: &GuestMemoryMmap, image: &[u8]) -> Result<(), Lab1Error> {
    if image.len() > MAX_IMAGE_SIZE {
        return Err(Lab1Error::ImageTooLarge { len: image.len() });
    }
    memory
        .write_slice(image, GuestAddress(GUEST_LOAD_ADDR))
        .map_err(Lab1Error::WriteImage)
}
// ANCHOR_END: load_image

// ANCHOR: addresses
pub fn guest_memory_host_address(memory: &GuestMemoryMmap) -> u64 {
    memory
        .get_host_address(GuestAddress(GUEST_LOAD_ADDR))
        .expect("guest physical 0 is inside guest memory") as u64
}

pub fn kvm_run_mapping(vcpu: &mut Vcpu<'_>) -> KvmRunMapping {
    let address = vcpu.fd.get_kvm_run() as *const _ as u64;
    KvmRunMapping {
        address,
        size: vcpu.run_size,
    }
}
// ANCHOR_END: addresses

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;
    use crate::GUEST_MEMORY_SIZE;

    fn require_kvm() {
        if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
            panic!("this test needs read/write access to /dev/kvm ({err}); see the book's Troubleshooting chapter");
        }
    }

    #[test]
    fn the_vm_has_2_mib_at_guest_physical_0_and_a_mapped_kvm_run() {
        require_kvm();
        let vm = vm_init(GUEST_MEMORY_SIZE).unwrap();
        let regions: Vec<_> = vm.memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(regions, [(0, 0x20_0000)]);
        let base = guest_memory_host_address(&vm.memory);
        assert_eq!(base, vm.memory.iter().next().unwrap().as_ptr() as u64);
        let mut vcpu = vcpu_init(&vm).unwrap();
        let run = kvm_run_mapping(&mut vcpu);
        assert_eq!(run.size, vm.kvm.get_vcpu_mmap_size().unwrap());
        assert!(run.address != 0 && run.address.is_multiple_of(4096));
    }

    #[test]
    fn the_image_lands_at_0_and_oversized_ones_are_refused() {
        let memory = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        load_image(&memory, &[0xf4, 0xeb, 0xfe]).unwrap();
        let mut back = [0u8; 3];
        memory.read_slice(&mut back, GuestAddress(0)).unwrap();
        assert_eq!(back, [0xf4, 0xeb, 0xfe]);
        let too_big = vec![0; MAX_IMAGE_SIZE + 1];
        assert!(
            matches!(load_image(&memory, &too_big), Err(Lab1Error::ImageTooLarge { len }) if len == MAX_IMAGE_SIZE + 1)
        );
    }
}
