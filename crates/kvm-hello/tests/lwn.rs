//! The warm-up of the assignment: the VM of LWN's "Using the KVM API" (2015), in Rust with
//! kvm-ioctls, run for real. The book's chapter "Warm-up: the KVM API" includes it piece by piece.

mod common;

// ANCHOR: imports
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
// ANCHOR_END: imports

#[test]
fn the_lwn_vm_adds_2_and_2_in_three_exits() {
    common::require_kvm();
    // ANCHOR: code
    /// 16-bit code: prints AL + BL as a digit and a newline on the serial port, then halts.
    const CODE: [u8; 12] = [
        0xba, 0xf8, 0x03, // mov $0x3f8, %dx
        0x00, 0xd8, //       add %bl, %al
        0x04, b'0', //       add $'0', %al
        0xee, //             out %al, (%dx)
        0xb0, b'\n', //      mov $'\n', %al
        0xee,  //             out %al, (%dx)
        0xf4,  //             hlt
    ];
    // ANCHOR_END: code

    // ANCHOR: vm
    let kvm = Kvm::new().expect("open /dev/kvm"); //         open("/dev/kvm")
    assert_eq!(kvm.get_api_version(), 12); //                KVM_GET_API_VERSION
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");

    // One 4 KiB page of guest memory at guest physical 0x1000, holding the code.
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
    memory.write_slice(&CODE, GuestAddress(0x1000)).unwrap();
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0x1000,
        memory_size: 0x1000,
        userspace_addr: memory.get_host_address(GuestAddress(0x1000)).unwrap() as u64,
    };
    // SAFETY: the region is `memory`'s own page. The vCPU, declared after `memory`, is dropped
    // before it, so the guest never runs once the page is gone (the VM, dropped after it, runs nothing).
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    // ANCHOR_END: vm

    // ANCHOR: vcpu
    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU"); // also maps kvm_run
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0; //     real mode: CS:IP = 0:0x1000 is guest physical 0x1000
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0x1000;
    regs.rax = 2;
    regs.rbx = 2;
    regs.rflags = 0x2; //     bit 1 is reserved and must be set
    vcpu.set_regs(&regs).unwrap();
    // ANCHOR_END: vcpu

    // ANCHOR: run
    let (mut output, mut io_exits, mut hlt_exits) = (Vec::new(), 0, 0);
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(0x3f8, data) => {
                io_exits += 1;
                output.extend_from_slice(data);
            }
            VcpuExit::Hlt => {
                hlt_exits += 1;
                break;
            }
            other => panic!("unexpected exit: {other:?}"),
        }
    }
    // ANCHOR_END: run
    assert_eq!(output, b"4\n");
    assert_eq!((io_exits, hlt_exits), (2, 1));
}
