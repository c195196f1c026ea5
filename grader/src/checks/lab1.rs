//! Lab 1: the VM, its memory and its vCPU, checked on a real KVM.

use kit_common::{GUEST_MEMORY_SIZE, MAX_IMAGE_SIZE};
use kvm_ioctls::VcpuExit;
use lab1_memory::{Lab1Error, Vcpu, Vm};
use lab3_registers::{kvm_regs, kvm_segment};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{Group, expect_field, fail};
use crate::{Check, Ctx, Part, describe};

const LAB: u8 = 1;
/// Lab 1's checks all create a VM.
const KVM: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: true,
};

/// Lab 1's checks of plain guest memory: no KVM.
const PURE: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: false,
};

/// The checks of lab 1.
pub const CHECKS: &[Check] = &[
    KVM.check(
        "lab1_vm_init_memory",
        "vm_init allocates 2 MiB at guest physical 0",
        2,
        vm_init_memory,
    ),
    KVM.check(
        "lab1_memory_seen_by_vcpu",
        "the vCPU sees that memory, all 2 MiB of it",
        3,
        memory_seen_by_vcpu,
    ),
    KVM.check(
        "lab1_vcpu_init",
        "vcpu_init records the kvm_run size",
        2,
        vcpu_init_run_size,
    ),
    KVM.check(
        "lab1_kvm_run_mapping",
        "kvm_run_mapping: address and size",
        1,
        kvm_run_mapping,
    ),
    KVM.check(
        "lab1_guest_memory_host_address",
        "guest_memory_host_address",
        1,
        guest_memory_host_address,
    ),
    PURE.check(
        "lab1_load_image",
        "load_image copies to 0 and refuses oversized images",
        2,
        load_image,
    ),
];

/// Fails with a clear line when /dev/kvm cannot be used.
pub fn require_kvm() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|err| format!("this check needs read/write access to /dev/kvm ({err}) (book: Troubleshooting)"))
}

fn vm(ctx: &Ctx) -> Result<Vm, String> {
    require_kvm()?;
    (ctx.labs.vm_init)(GUEST_MEMORY_SIZE).map_err(|err| {
        let text = err.to_string();
        let hint = if text.contains("KVM_SET_USER_MEMORY_REGION") && text.contains("Invalid argument") {
            ": KVM refuses a slot whose memory_size, guest_phys_addr or userspace_addr is not a multiple of the page size (4 KiB): register exactly the mem_size bytes vm-memory allocated"
        } else {
            ""
        };
        fail(LAB, "vm_init", format!("{text}{hint}"))
    })
}

fn vcpu<'vm>(ctx: &Ctx, vm: &'vm Vm) -> Result<Vcpu<'vm>, String> {
    (ctx.labs.vcpu_init)(vm).map_err(|err| fail(LAB, "vcpu_init", err))
}

fn vm_init_memory(ctx: &Ctx) -> Result<(), String> {
    let vm = vm(ctx)?;
    let regions: Vec<(u64, u64)> = vm.memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
    match regions.as_slice() {
        [(start, len)] => {
            expect_field(
                LAB,
                "vm_init",
                "the memory's first guest physical address",
                *start,
                0,
                describe::hex,
                "the guest's RAM starts at guest physical 0, where its code is",
            )?;
            expect_field(
                LAB,
                "vm_init",
                "the memory's size",
                *len,
                GUEST_MEMORY_SIZE as u64,
                describe::hex,
                "vm_init(mem_size) allocates exactly mem_size bytes (2 MiB)",
            )
        }
        _ => Err(fail(
            LAB,
            "vm_init",
            format!("guest memory has regions {regions:x?}, expected one region (0x0, 0x200000)"),
        )),
    }
}

/// A 32-bit program: reads the last 16 bytes of guest memory, stores `value` there and at 0x500,
/// then halts. Where it stops tells how the memory is registered.
fn probe(value: u8) -> [u8; 20] {
    [
        0xa0, 0xf0, 0xff, 0x1f, 0x00, // mov al, [0x1ffff0]
        0xc6, 0x05, 0xf0, 0xff, 0x1f, 0x00, value, // movb $value, 0x1ffff0
        0xc6, 0x05, 0x00, 0x05, 0x00, 0x00, value, // movb $value, 0x500
        0xf4,  // hlt
    ]
}

fn memory_seen_by_vcpu(ctx: &Ctx) -> Result<(), String> {
    let value = ctx.rng().range(1, 256) as u8;
    let vm = vm(ctx)?;
    let mut vcpu = vcpu(ctx, &vm)?;
    vm.memory
        .write_slice(&probe(value), GuestAddress(0))
        .map_err(|err| format!("the grader cannot write the probe: {err}"))?;
    // The grader sets up flat 32-bit protected mode itself, so this check needs no other lab.
    let mut sregs = vcpu
        .fd
        .get_sregs()
        .map_err(|err| format!("KVM_GET_SREGS failed: {err}"))?;
    let flat = |type_: u8, selector: u16| kvm_segment {
        limit: 0xffff_ffff,
        type_,
        selector,
        present: 1,
        s: 1,
        db: 1,
        g: 1,
        ..Default::default()
    };
    sregs.cr0 |= 1;
    sregs.cs = flat(11, 8);
    (sregs.ds, sregs.es, sregs.ss) = (flat(3, 16), flat(3, 16), flat(3, 16));
    vcpu.fd
        .set_sregs(&sregs)
        .map_err(|err| format!("KVM_SET_SREGS failed: {err}"))?;
    vcpu.fd
        .set_regs(&kvm_regs {
            rflags: 2,
            ..Default::default()
        })
        .map_err(|err| format!("KVM_SET_REGS failed: {err}"))?;
    match vcpu.fd.run() {
        Ok(VcpuExit::Hlt) => {}
        Ok(VcpuExit::MmioRead(addr, _)) => {
            return Err(fail(
                LAB,
                "vm_init",
                format!(
                    "the vCPU found no memory at guest physical {addr:#x}: register all of guest memory with KVM (memory_size = mem_size, guest_phys_addr = 0)"
                ),
            ));
        }
        Ok(VcpuExit::MmioWrite(addr, _)) => {
            return Err(fail(
                LAB,
                "vm_init",
                format!(
                    "the guest could read guest physical {addr:#x} but not write it: the memory is registered read-only (flags must be 0, not KVM_MEM_READONLY)"
                ),
            ));
        }
        Ok(exit) => {
            return Err(fail(
                LAB,
                "vm_init",
                format!(
                    "a two-instruction probe at guest physical 0 ended with {exit:?} instead of HLT: the vCPU does not find the guest memory at 0 (register it as slot 0 at guest_phys_addr 0)"
                ),
            ));
        }
        Err(err) => {
            return Err(fail(
                LAB,
                "vm_init",
                format!("KVM_RUN of a probe failed: {err}: is the memory registered with KVM?"),
            ));
        }
    }
    for addr in [0x500, 0x1f_fff0] {
        let byte: u8 = vm
            .memory
            .read_obj(GuestAddress(addr))
            .map_err(|err| format!("reading {addr:#x}: {err}"))?;
        if byte != value {
            return Err(fail(
                LAB,
                "vm_init",
                format!(
                    "the vCPU wrote {value} at guest physical {addr:#x}, but the memory you allocated holds {byte} there: userspace_addr must be that memory's host address"
                ),
            ));
        }
    }
    Ok(())
}

fn vcpu_init_run_size(ctx: &Ctx) -> Result<(), String> {
    let vm = vm(ctx)?;
    let vcpu = vcpu(ctx, &vm)?;
    let expected = vm
        .kvm
        .get_vcpu_mmap_size()
        .map_err(|err| format!("KVM_GET_VCPU_MMAP_SIZE failed: {err}"))?;
    expect_field(
        LAB,
        "vcpu_init",
        "run_size",
        vcpu.run_size as u64,
        expected as u64,
        describe::hex,
        "the kvm_run mapping is KVM_GET_VCPU_MMAP_SIZE bytes (VmFd::run_size)",
    )
}

fn kvm_run_mapping(ctx: &Ctx) -> Result<(), String> {
    let vm = vm(ctx)?;
    let mut vcpu = vcpu(ctx, &vm)?;
    let expected_size = vm
        .kvm
        .get_vcpu_mmap_size()
        .map_err(|err| format!("KVM_GET_VCPU_MMAP_SIZE failed: {err}"))?;
    let mapping = (ctx.labs.kvm_run_mapping)(&mut vcpu);
    let address = vcpu.fd.get_kvm_run() as *const _ as u64;
    expect_field(
        LAB,
        "kvm_run_mapping",
        "address",
        mapping.address,
        address,
        describe::hex,
        "the address of the kvm_run structure (VcpuFd::get_kvm_run)",
    )?;
    expect_field(
        LAB,
        "kvm_run_mapping",
        "size",
        mapping.size as u64,
        expected_size as u64,
        describe::hex,
        "KVM_GET_VCPU_MMAP_SIZE",
    )
}

fn guest_memory_host_address(ctx: &Ctx) -> Result<(), String> {
    let vm = vm(ctx)?;
    let expected = vm.memory.iter().next().map(|r| r.as_ptr() as u64).unwrap_or_default();
    let found = (ctx.labs.guest_memory_host_address)(&vm.memory);
    expect_field(
        LAB,
        "guest_memory_host_address",
        "the address",
        found,
        expected,
        describe::hex,
        "the host virtual address where guest physical 0 is mapped (GuestMemoryBackend::get_host_address)",
    )
}

fn load_image(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let mut lengths = [
        MAX_IMAGE_SIZE,
        rng.range(1, MAX_IMAGE_SIZE as u64) as usize,
        MAX_IMAGE_SIZE + rng.range(1, 0x1000) as usize,
    ];
    rng.shuffle(&mut lengths);
    for len in lengths {
        let memory = super::lab2::fresh_memory();
        let image: Vec<u8> = (0..len).map(|_| rng.range(1, 256) as u8).collect();
        let loaded = (ctx.labs.load_image)(&memory, &image);
        if len > MAX_IMAGE_SIZE {
            match loaded {
                Err(Lab1Error::ImageTooLarge { len: found }) if found == len => continue,
                other => {
                    return Err(fail(
                        LAB,
                        "load_image",
                        format!(
                            "an image of {len} bytes gave {other:?}, expected Err(ImageTooLarge {{ len: {len} }}): more than {MAX_IMAGE_SIZE} bytes would overwrite the page tables at 0x2000"
                        ),
                    ));
                }
            }
        }
        loaded.map_err(|err| {
            fail(
                LAB,
                "load_image",
                format!("an image of {len} bytes (at most {MAX_IMAGE_SIZE} are allowed) was refused: {err}"),
            )
        })?;
        let mut back = vec![0u8; len];
        memory
            .read_slice(&mut back, GuestAddress(0))
            .expect("inside guest memory");
        if let Some(at) = back.iter().zip(&image).position(|(a, b)| a != b) {
            return Err(fail(
                LAB,
                "load_image",
                format!(
                    "after loading an image of {len} bytes, guest physical {at:#x} holds {:#x}, expected the image's byte {:#x}: copy the whole image to guest physical 0",
                    back[at], image[at]
                ),
            ));
        }
    }
    Ok(())
}
