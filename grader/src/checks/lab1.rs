//! Lab 1: the VM, its memory and its vCPU, checked on a real KVM. Every check runs code made for
//! this run in the lab's VM (random values at random addresses, random OUTs) and judges what
//! the guest did, seen both by the guest and through the memory the lab returned; the regions,
//! sizes and addresses the lab reports count only beside that effect.

use grader_protocol::lab1::{
    CpuSetup, GuestRun, HostAddress, LabFailure, LoadImages, LoadSeen, Loaded, VcpuOf, VcpuRun, VcpuRunReply, VcpuStop,
};
use kit_common::{GUEST_MEMORY_SIZE, MAX_IMAGE_SIZE};
use kvm_bindings::{kvm_regs, kvm_segment};

use super::{Group, expect_field, fail, fail_one_of};
use crate::rng::Rng;
use crate::{Check, Ctx, Part, Stop, describe};

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

/// The checks of lab 1. The vCPU's checks run code in the memory vm_init registered: a failure
/// of vm_init's own check explains theirs.
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
    )
    .explained_by(&["lab1_vm_init_memory"]),
    KVM.check(
        "lab1_vcpu_init",
        "vcpu_init records the kvm_run size",
        2,
        vcpu_init_run_size,
    )
    .explained_by(&["lab1_vm_init_memory"]),
    KVM.check(
        "lab1_kvm_run_mapping",
        "kvm_run_mapping: address and size",
        1,
        kvm_run_mapping,
    )
    .explained_by(&["lab1_vm_init_memory", "lab1_vcpu_init"]),
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

/// Where the judge's code starts: the vCPU's RIP after the probe's flat 32-bit setup.
const CODE_ADDR: u64 = 0;
/// The code's data stays above its first page.
const DATA_START: u64 = 0x1000;
/// `hlt`.
const HLT: u8 = 0xf4;
/// The most exits a run of the judge's code may take: far more than it makes.
const MAX_EXITS: u32 = 64;

/// The CPU state the judge's 32-bit code runs in, as data (SDM vol. 3A: 9.9.1 switching to
/// protected mode sets CR0.PE; 3.4.5 segment descriptors: a flat segment has base 0, a 4 GiB
/// limit in pages (G), 32-bit default size (D/B); type 0xB is code execute/read accessed, 0x3
/// data read/write accessed; selectors 8 and 16 as in kvm-hello-world's GDT). Lab 1 needs no
/// other lab: the probe loads these values as they are.
fn protected_mode() -> CpuSetup {
    let code = kvm_segment {
        limit: 0xffff_ffff,
        selector: 0x8,
        type_: 0xb,
        present: 1,
        s: 1,
        db: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 0x3,
        ..code
    };
    CpuSetup {
        cr0_or: crate::facts::CR0_PE,
        code,
        data,
        regs: kvm_regs {
            rip: CODE_ADDR,
            rflags: 0x2,
            ..Default::default()
        },
    }
}

/// Random values the vCPU reads at random addresses, XORs with a key and stores back: the
/// guest can only store the right value if it saw the host's, and the host only finds it if it
/// sees the guest's memory.
struct MemoryProbe {
    /// (guest physical address, value the host writes there).
    slots: Vec<(u64, u32)>,
    /// What the guest XORs each value with.
    key: u32,
}

impl MemoryProbe {
    /// `count` slots at distinct 4-byte-aligned addresses above the code, the first in the last
    /// 16 bytes of guest memory (the vCPU must see all of it), the others anywhere.
    fn random(rng: &mut Rng, count: usize) -> MemoryProbe {
        let top = GUEST_MEMORY_SIZE as u64;
        let mut addrs = vec![top - 16 + rng.range(0, 4) * 4];
        while addrs.len() < count {
            let addr = rng.range(DATA_START / 4, top / 4) * 4;
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        let slots = addrs.into_iter().map(|a| (a, rng.next_u64() as u32)).collect();
        MemoryProbe {
            slots,
            key: rng.range(1, 1 << 32) as u32,
        }
    }

    /// 32-bit code: for each slot `mov eax, [a]; xor eax, key; mov [a], eax`, then `hlt`.
    fn code(&self) -> Vec<u8> {
        let mut code = Vec::new();
        for &(addr, _) in &self.slots {
            let addr = (addr as u32).to_le_bytes();
            code.push(0xa1); // mov eax, moffs32
            code.extend_from_slice(&addr);
            code.push(0x35); // xor eax, imm32
            code.extend_from_slice(&self.key.to_le_bytes());
            code.push(0xa3); // mov moffs32, eax
            code.extend_from_slice(&addr);
        }
        code.push(HLT);
        code
    }

    fn request(&self, vcpu: VcpuOf) -> VcpuRun {
        let mut writes = vec![(CODE_ADDR, self.code())];
        writes.extend(self.slots.iter().map(|&(a, v)| (a, v.to_le_bytes().to_vec())));
        VcpuRun {
            setup: protected_mode(),
            vcpu,
            writes,
            reads: self.slots.iter().map(|&(a, _)| (a, 4)).collect(),
            mapping_at_first_out: false,
            max_exits: MAX_EXITS,
        }
    }
}

/// 32-bit code made for one run: `out dx, eax` of a random value to a random port, then one
/// `out dx, al` per byte of a random text, then `hlt`.
struct OutProbe {
    port: u16,
    value: u32,
    text: Vec<u8>,
}

impl OutProbe {
    fn random(rng: &mut Rng) -> OutProbe {
        OutProbe {
            // Ports no in-kernel device serves (the VM has none) and no PCI configuration port.
            port: rng.range(0x200, 0x400) as u16,
            value: rng.next_u64() as u32,
            text: rng.text_between(1, 12),
        }
    }

    fn code(&self) -> Vec<u8> {
        let mut code = vec![0x66, 0xba]; // mov dx, imm16
        code.extend_from_slice(&self.port.to_le_bytes());
        code.push(0xb8); // mov eax, imm32
        code.extend_from_slice(&self.value.to_le_bytes());
        code.push(0xef); // out dx, eax
        for &byte in &self.text {
            code.extend_from_slice(&[0xb0, byte, 0xee]); // mov al, imm8; out dx, al
        }
        code.push(HLT);
        code
    }

    /// The OUTs a vCPU that runs the code makes.
    fn outs(&self) -> Vec<(u16, Vec<u8>)> {
        let mut outs = vec![(self.port, self.value.to_le_bytes().to_vec())];
        outs.extend(self.text.iter().map(|&b| (self.port, vec![b])));
        outs
    }

    fn request(&self, mapping_at_first_out: bool) -> VcpuRun {
        VcpuRun {
            setup: protected_mode(),
            vcpu: VcpuOf::Lab,
            writes: vec![(CODE_ADDR, self.code())],
            reads: Vec::new(),
            mapping_at_first_out,
            max_exits: MAX_EXITS,
        }
    }
}

/// The lab's failure, with the hint KVM's EINVAL usually needs.
fn lab_failed(failure: LabFailure) -> Stop {
    let text = failure.error;
    let hint = if text.contains("KVM_SET_USER_MEMORY_REGION") && text.contains("Invalid argument") {
        ": KVM refuses a slot whose memory_size, guest_phys_addr or userspace_addr is not a multiple of the page size (4 KiB): register exactly the mem_size bytes vm-memory allocated"
    } else {
        ""
    };
    Stop::Failed(fail(LAB, &failure.function, format!("{text}{hint}")))
}

fn vcpu_run(ctx: &mut Ctx, request: &VcpuRun) -> Result<VcpuRunReply, Stop> {
    ctx.call(request)?.map_err(lab_failed)
}

/// What the stop of a run of the memory probe says about how vm_init registered the memory.
/// `ran_by` are the functions that made what ran: vm_init alone (the probe's vCPU), or vm_init
/// and vcpu_init (the lab's vCPU), the likelier first; a stop that is not a missing or read-only
/// page can come from either.
fn memory_stop(run: &GuestRun, ran_by: &[&str]) -> Result<(), String> {
    let what = match &run.stop {
        VcpuStop::Hlt => return Ok(()),
        VcpuStop::MmioRead(addr) => format!(
            "the vCPU found no memory at guest physical {addr:#x}: register all of guest memory with KVM (memory_size = mem_size, guest_phys_addr = 0)"
        ),
        VcpuStop::MmioWrite(addr) => format!(
            "the guest could read guest physical {addr:#x} but not write it: the memory is registered read-only (flags must be 0, not KVM_MEM_READONLY)"
        ),
        VcpuStop::Other(exit) => format!(
            "code made for this run at guest physical 0 ended with {exit} instead of HLT: the vCPU does not find the code written into the memory vm_init returned (register that memory as slot 0 at guest_phys_addr 0, its host address as userspace_addr)"
        ),
        VcpuStop::TooManyExits => format!(
            "code made for this run at guest physical 0 made more than {MAX_EXITS} exits without reaching its HLT: the vCPU does not run the code written into the memory vm_init returned (its host address must be the slot's userspace_addr)"
        ),
        VcpuStop::RunFailed(err) => {
            format!(
                "KVM_RUN of code made for this run failed: {err} (the memory not registered with KVM, or a vCPU that is not of this VM)"
            )
        }
        VcpuStop::Setup(err) => format!("the grader could not set up a vCPU of the VM vm_init returned: {err}"),
    };
    let page_fault = matches!(run.stop, VcpuStop::MmioRead(_) | VcpuStop::MmioWrite(_));
    Err(if page_fault {
        fail(LAB, "vm_init", what)
    } else {
        fail_one_of(LAB, ran_by, what)
    })
}

/// Runs the memory probe on a vCPU and judges what the guest stored, seen through the memory
/// the lab returned.
fn judge_memory_probe(probe: &MemoryProbe, reply: &VcpuRunReply, ran_by: &[&str]) -> Result<(), Stop> {
    memory_stop(&reply.run, ran_by)?;
    for (&(addr, value), found) in probe.slots.iter().zip(&reply.reads) {
        let expected = value ^ probe.key;
        let found = found
            .as_deref()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes);
        if found != Some(expected) {
            let held = found.map_or("nothing".to_owned(), |v| format!("{v:#x}"));
            let what = format!(
                "the vCPU read {value:#x} (written by the host) at guest physical {addr:#x} and wrote {expected:#x} back, but the memory you allocated holds {held} there: userspace_addr must be that memory's host address"
            );
            return Err(fail(LAB, "vm_init", what).into());
        }
    }
    if reply.reads.len() != probe.slots.len() {
        return Err(Stop::Failed(
            "the probe's answer is malformed: lab code must not write on descriptor 3".into(),
        ));
    }
    Ok(())
}

fn vm_init_memory(ctx: &mut Ctx) -> Result<(), Stop> {
    let probe = MemoryProbe::random(&mut ctx.rng(), 3);
    // The probe's own vCPU (KVM_CREATE_VCPU): this check judges vm_init alone.
    let reply = vcpu_run(ctx, &probe.request(VcpuOf::Probe))?;
    match reply.regions.as_slice() {
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
            )?;
        }
        regions => {
            return Err(fail(
                LAB,
                "vm_init",
                format!("guest memory has regions {regions:x?}, expected one region (0x0, 0x200000)"),
            )
            .into());
        }
    }
    judge_memory_probe(&probe, &reply, &["vm_init"])
}

fn memory_seen_by_vcpu(ctx: &mut Ctx) -> Result<(), Stop> {
    let probe = MemoryProbe::random(&mut ctx.rng(), 6);
    let reply = vcpu_run(ctx, &probe.request(VcpuOf::Lab))?;
    judge_memory_probe(&probe, &reply, &["vm_init", "vcpu_init"])
}

/// Judges the OUTs of a run of `probe` on the lab's vCPU.
fn judge_outs(function: &str, probe: &OutProbe, run: &GuestRun) -> Result<(), Stop> {
    let expected = probe.outs();
    if run.outs == expected && run.stop == VcpuStop::Hlt {
        return Ok(());
    }
    let what = format!(
        "code made for this run (an OUT of {:#x} to port {:#x}, then {} one-byte OUTs, then HLT) made the OUTs {:x?} and stopped at {:?}, expected {:x?} and HLT: the vCPU must run the VM's code (vCPU 0 of the VM vm_init made)",
        probe.value,
        probe.port,
        probe.text.len(),
        run.outs,
        run.stop,
        expected
    );
    Err(fail(LAB, function, what).into())
}

fn mmap_size(reply: &VcpuRunReply) -> Result<u64, Stop> {
    reply.mmap_size.ok_or_else(|| {
        Stop::Failed(
            "the probe could not ask KVM for KVM_GET_VCPU_MMAP_SIZE (a fault of the host, not of your labs)".into(),
        )
    })
}

fn vcpu_init_run_size(ctx: &mut Ctx) -> Result<(), Stop> {
    let probe = OutProbe::random(&mut ctx.rng());
    let reply = vcpu_run(ctx, &probe.request(false))?;
    let expected = mmap_size(&reply)?;
    expect_field(
        LAB,
        "vcpu_init",
        "run_size",
        reply.run_size.unwrap_or_default(),
        expected,
        describe::hex,
        "the kvm_run mapping is KVM_GET_VCPU_MMAP_SIZE bytes (VmFd::run_size)",
    )?;
    judge_outs("vcpu_init", &probe, &reply.run)
}

fn kvm_run_mapping(ctx: &mut Ctx) -> Result<(), Stop> {
    let probe = OutProbe::random(&mut ctx.rng());
    let reply = vcpu_run(ctx, &probe.request(true))?;
    let expected_size = mmap_size(&reply)?;
    judge_outs("vcpu_init", &probe, &reply.run)?;
    let (Some(mapping), Some(address)) = (&reply.mapping, reply.kvm_run_address) else {
        return Err(Stop::Failed(
            "the probe's answer is malformed: lab code must not write on descriptor 3".into(),
        ));
    };
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
        mapping.size,
        expected_size,
        describe::hex,
        "KVM_GET_VCPU_MMAP_SIZE",
    )?;
    let data = probe.value.to_le_bytes();
    if mapping.out_data_there.as_deref() != Some(&data[..]) {
        let what = format!(
            "after an OUT of {:#x}, the returned address + io.data_offset holds {:x?}, expected its bytes {data:x?}: return where kvm_run is mapped",
            probe.value, mapping.out_data_there
        );
        return Err(fail(LAB, "kvm_run_mapping", what).into());
    }
    Ok(())
}

fn guest_memory_host_address(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let at = rng.range(0, GUEST_MEMORY_SIZE as u64 - 16);
    let bytes: Vec<u8> = (0..16).map(|_| rng.range(1, 256) as u8).collect();
    let seen = ctx.call(&HostAddress {
        at,
        bytes: bytes.clone(),
    })?;
    expect_field(
        LAB,
        "guest_memory_host_address",
        "the address",
        seen.returned,
        seen.actual,
        describe::hex,
        "the host virtual address where guest physical 0 is mapped (GuestMemoryBackend::get_host_address)",
    )?;
    if seen.found.as_deref() != Some(&bytes[..]) {
        let what = format!(
            "the bytes written at guest physical {at:#x} are not at the returned address + {at:#x} (found {:x?}): return where guest physical 0 is mapped",
            seen.found
        );
        return Err(fail(LAB, "guest_memory_host_address", what).into());
    }
    Ok(())
}

/// `load_image`'s result as a student's code would print it.
fn shown(loaded: &Loaded) -> String {
    match loaded {
        Loaded::Ok => "Ok(())".into(),
        Loaded::TooLarge(len) => format!("Err(ImageTooLarge {{ len: {len} }})"),
        Loaded::Error(text) => format!("Err({text:?})"),
    }
}

fn load_image(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let mut lengths = [
        MAX_IMAGE_SIZE,
        rng.range(1, MAX_IMAGE_SIZE as u64) as usize,
        MAX_IMAGE_SIZE + rng.range(1, 0x1000) as usize,
    ];
    rng.shuffle(&mut lengths);
    let images: Vec<Vec<u8>> = lengths
        .iter()
        .map(|&len| (0..len).map(|_| rng.range(1, 256) as u8).collect())
        .collect();
    let read_len = MAX_IMAGE_SIZE as u64 + 0x1000;
    let seen = ctx.call(&LoadImages {
        images: images.clone(),
        read_len,
    })?;
    if seen.len() != images.len() || seen.iter().any(|s| s.memory.len() as u64 != read_len) {
        return Err(Stop::Failed(
            "the probe's answer is malformed: lab code must not write on descriptor 3".into(),
        ));
    }
    for (image, LoadSeen { loaded, memory }) in images.iter().zip(&seen) {
        let len = image.len();
        if len > MAX_IMAGE_SIZE {
            if *loaded != Loaded::TooLarge(len as u64) {
                return Err(fail(
                    LAB,
                    "load_image",
                    format!(
                        "an image of {len} bytes gave {}, expected Err(ImageTooLarge {{ len: {len} }}): more than {MAX_IMAGE_SIZE} bytes would overwrite the page tables at 0x2000",
                        shown(loaded)
                    ),
                )
                .into());
            }
            if let Some(at) = memory.iter().position(|&b| b != 0) {
                return Err(fail(
                    LAB,
                    "load_image",
                    format!("refused an image of {len} bytes but wrote guest physical {at:#x} first: refuse before copying anything"),
                )
                .into());
            }
            continue;
        }
        if *loaded != Loaded::Ok {
            return Err(fail(
                LAB,
                "load_image",
                format!(
                    "an image of {len} bytes (at most {MAX_IMAGE_SIZE} are allowed) was refused: {}",
                    shown(loaded)
                ),
            )
            .into());
        }
        if let Some(at) = memory.iter().zip(image).position(|(a, b)| a != b) {
            return Err(fail(
                LAB,
                "load_image",
                format!(
                    "after loading an image of {len} bytes, guest physical {at:#x} holds {:#x}, expected the image's byte {:#x}: copy the whole image to guest physical 0",
                    memory[at], image[at]
                ),
            )
            .into());
        }
        if let Some(at) = memory[len..].iter().position(|&b| b != 0) {
            return Err(fail(
                LAB,
                "load_image",
                format!(
                    "after loading an image of {len} bytes, guest physical {:#x} (past its end) holds {:#x}: copy the image and nothing else",
                    len + at,
                    memory[len + at]
                ),
            )
            .into());
        }
    }
    Ok(())
}
