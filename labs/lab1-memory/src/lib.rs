//! # Lab 1: guest memory and the vCPU
//!
//! kvm-hello-world's `vm_init` and `vcpu_init`, in Rust. You write the five functions marked
//! `TODO(lab1)` in this file; everything else here is given. Book: "Lab 1: Guest memory and the vCPU".
//!
//! Check your work with `cargo grade lab1`; run the whole VMM with `cargo run -p kvm-hello`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

pub use kit_common::{GUEST_LOAD_ADDR, GUEST_MEMORY_SIZE, MAX_IMAGE_SIZE};

/// The KVM API version every kernel since 2.6.22 reports (`KVM_GET_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;
/// The memory slot that holds the guest's RAM.
pub const GUEST_MEMORY_SLOT: u32 = 0;
/// Where KVM may put the three pages of the TSS it needs to run real mode on Intel VMX without
/// "unrestricted guest" (just below 4 GiB, far from the guest's RAM), as kvm-hello-world does.
/// Other hosts ignore it; setting it is harmless everywhere.
pub const TSS_ADDRESS: usize = 0xfffb_d000;
/// The vCPU's id.
pub const VCPU_ID: u64 = 0;

/// A virtual machine: the KVM system handle, the VM, and its guest memory.
///
/// The fields drop in the order they are declared: the VM (`fd`) goes before the `memory`
/// registered with it, so KVM never holds a region whose memory is gone. Keep that order.
#[derive(Debug)]
pub struct Vm {
    /// The open `/dev/kvm`.
    pub kvm: Kvm,
    /// The VM created by `KVM_CREATE_VM`.
    pub fd: VmFd,
    /// Guest physical memory, registered with KVM at guest physical 0.
    pub memory: GuestMemoryMmap,
}

/// A vCPU and the size of its `kvm_run` area.
///
/// A `Vcpu<'vm>` borrows the `Vm` it belongs to, so the compiler refuses any vCPU that would
/// outlive its VM and the guest memory the guest runs in:
///
/// ```compile_fail,E0597
/// # fn main() -> Result<(), lab1_memory::Lab1Error> {
/// let vcpu = {
///     let vm = lab1_memory::vm_init(lab1_memory::GUEST_MEMORY_SIZE)?;
///     lab1_memory::vcpu_init(&vm)?
/// }; // error: `vm` does not live long enough
/// # drop(vcpu);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Vcpu<'vm> {
    /// The vCPU created by `KVM_CREATE_VCPU` (kvm-ioctls has already mapped its `kvm_run` area).
    pub fd: VcpuFd,
    /// The size of the `kvm_run` mapping, `KVM_GET_VCPU_MMAP_SIZE`.
    pub run_size: usize,
    /// The VM this vCPU belongs to.
    pub vm: &'vm Vm,
}

/// Where the vCPU's `kvm_run` area sits in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmRunMapping {
    /// Host virtual address of the mapping.
    pub address: u64,
    /// Its size in bytes.
    pub size: usize,
}

/// What can go wrong in lab 1.
#[derive(Debug, thiserror::Error)]
pub enum Lab1Error {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The device answered with an API version other than 12 (or is not KVM at all).
    #[error("/dev/kvm reports KVM API version {0}, expected {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// A KVM ioctl failed.
    #[error("{ioctl} failed: {source}")]
    Ioctl {
        /// The ioctl's name, e.g. `KVM_CREATE_VM`.
        ioctl: &'static str,
        /// The error number the kernel returned.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate {size:#x} bytes of guest memory: {source}")]
    Memory {
        /// The size asked for.
        size: usize,
        /// vm-memory's reason.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// The guest image does not fit below the page tables.
    #[error("the guest image is {len} bytes; at most {MAX_IMAGE_SIZE} bytes fit below the page tables at 0x2000")]
    ImageTooLarge {
        /// The image's size.
        len: usize,
    },
    /// Writing the guest image into guest memory failed.
    #[error("cannot write the guest image into guest memory: {0}")]
    WriteImage(#[source] vm_memory::GuestMemoryError),
}

// ANCHOR: stub_vm_init
// TODO(lab1): open /dev/kvm (`Kvm::new`), check that its API version is `KVM_API_VERSION`,
// create the VM, give it `TSS_ADDRESS` (`set_tss_address`), allocate `mem_size` bytes of guest
// memory at guest physical 0 (`GuestMemoryMmap::<()>::from_ranges`) and register them with KVM
// as slot `GUEST_MEMORY_SLOT` (`kvm_userspace_memory_region`, `set_user_memory_region`: an
// `unsafe` call; say why it is sound in a `// SAFETY:` comment).
// Graded (lab1_vm_init_memory): vm_init(mem_size) allocates exactly mem_size bytes of guest memory,
// as one region that starts at guest physical 0.
// Graded (lab1_memory_seen_by_vcpu): vm_init registers all of guest memory with KVM as slot
// GUEST_MEMORY_SLOT: guest_phys_addr 0, memory_size mem_size, flags 0 (writable), and
// userspace_addr the host address of that same memory.
/// Creates the VM with `mem_size` bytes of guest memory at guest physical 0 (`vm_init`).
#[cfg(not(feature = "solution"))]
pub fn vm_init(mem_size: usize) -> Result<Vm, Lab1Error> {
    let _ = mem_size;
    todo!("lab1 vm_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)")
}
// ANCHOR_END: stub_vm_init

// ANCHOR: stub_vcpu_init
// TODO(lab1): create vCPU `VCPU_ID` and record the size of its `kvm_run` mapping
// (`VmFd::run_size`). kvm-ioctls maps `kvm_run` for you inside `create_vcpu`. The `Vcpu` keeps
// `vm` (a borrow): a vCPU cannot outlive its VM's memory.
// Graded (lab1_vcpu_init): vcpu_init creates vCPU VCPU_ID and records in run_size the size
// KVM_GET_VCPU_MMAP_SIZE reports.
/// Creates the VM's vCPU (`vcpu_init`).
#[cfg(not(feature = "solution"))]
pub fn vcpu_init(vm: &Vm) -> Result<Vcpu<'_>, Lab1Error> {
    let _ = vm;
    todo!("lab1 vcpu_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)")
}
// ANCHOR_END: stub_vcpu_init

// ANCHOR: stub_load_image
// TODO(lab1): refuse an image longer than `MAX_IMAGE_SIZE`, then copy it to `GUEST_LOAD_ADDR`
// through vm-memory (`Bytes::write_slice`): never through a raw pointer.
// Graded (lab1_load_image): load_image copies the whole image to guest physical 0; an image of up
// to MAX_IMAGE_SIZE bytes is loaded, and a longer one is refused with Lab1Error::ImageTooLarge {
// len }.
/// Copies the guest image to guest physical 0, where the vCPU starts.
#[cfg(not(feature = "solution"))]
pub fn load_image(memory: &GuestMemoryMmap, image: &[u8]) -> Result<(), Lab1Error> {
    let _ = (memory, image);
    todo!("lab1 load_image (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)")
}
// ANCHOR_END: stub_load_image

// ANCHOR: stub_guest_memory_host_address
// TODO(lab1): the host virtual address at which guest physical 0 is mapped in this process
// (`GuestMemoryBackend::get_host_address`). It is what kvm-hello-world's `mmap` returns.
// Graded (lab1_guest_memory_host_address): guest_memory_host_address returns the host virtual
// address at which guest physical 0 is mapped in this process.
/// The host virtual address of guest physical 0.
#[cfg(not(feature = "solution"))]
pub fn guest_memory_host_address(memory: &GuestMemoryMmap) -> u64 {
    let _ = memory;
    todo!("lab1 guest_memory_host_address (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)")
}
// ANCHOR_END: stub_guest_memory_host_address

// ANCHOR: stub_kvm_run_mapping
// TODO(lab1): where the vCPU's `kvm_run` area is mapped (`VcpuFd::get_kvm_run`) and its size.
// Graded (lab1_kvm_run_mapping): kvm_run_mapping returns the host virtual address of the vCPU's
// kvm_run structure (VcpuFd::get_kvm_run) and the size KVM_GET_VCPU_MMAP_SIZE reports.
/// The host virtual address and size of the vCPU's `kvm_run` mapping.
#[cfg(not(feature = "solution"))]
pub fn kvm_run_mapping(vcpu: &mut Vcpu<'_>) -> KvmRunMapping {
    let _ = vcpu;
    todo!("lab1 kvm_run_mapping (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)")
}
// ANCHOR_END: stub_kvm_run_mapping

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
