//! The reference solution of lab 1 (built with `--features solution`).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{
    GUEST_LOAD_ADDR, GUEST_MEMORY_SLOT, KVM_API_VERSION, KvmRunMapping, Lab1Error, MAX_IMAGE_SIZE,
    TSS_ADDRESS, VCPU_ID, Vcpu, Vm,
};

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
    fd.set_tss_address(TSS_ADDRESS)
        .map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_SET_TSS_ADDR",
            source,
        })?;

    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(GUEST_LOAD_ADDR), mem_size)])
        .map_err(|source| Lab1Error::Memory {
        size: mem_size,
        source,
    })?;
    let region = kvm_userspace_memory_region {
        slot: GUEST_MEMORY_SLOT,
        flags: 0,
        guest_phys_addr: GUEST_LOAD_ADDR,
        memory_size: mem_size as u64,
        userspace_addr: guest_memory_host_address(&memory),
    };
    // SAFETY: the region is `memory`'s own mapping of `mem_size` bytes, and `Vm` keeps `memory`
    // alive as long as the VM (`fd`) that uses it.
    unsafe { fd.set_user_memory_region(region) }.map_err(|source| Lab1Error::Ioctl {
        ioctl: "KVM_SET_USER_MEMORY_REGION",
        source,
    })?;
    Ok(Vm { kvm, fd, memory })
}
// ANCHOR_END: vm_init

// ANCHOR: vcpu_init
pub fn vcpu_init(vm: &Vm) -> Result<Vcpu, Lab1Error> {
    let fd = vm
        .fd
        .create_vcpu(VCPU_ID)
        .map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_CREATE_VCPU",
            source,
        })?;
    Ok(Vcpu {
        fd,
        run_size: vm.fd.run_size(),
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

pub fn kvm_run_mapping(vcpu: &mut Vcpu) -> KvmRunMapping {
    let address = vcpu.fd.get_kvm_run() as *const _ as u64;
    KvmRunMapping {
        address,
        size: vcpu.run_size,
    }
}
// ANCHOR_END: addresses
