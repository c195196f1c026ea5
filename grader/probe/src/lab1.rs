//! Lab 1: the lab's VM and vCPU run the judge's code; the probe reports what the guest did and
//! what the lab's memory holds, never whether that is right.

use grader_protocol::lab1::{
    CpuSetup, GuestRun, HostAddress, HostAddressSeen, LabFailure, LoadImages, LoadSeen, Loaded, MappingSeen, VcpuOf,
    VcpuRun, VcpuRunReply, VcpuStop,
};
use grader_protocol::{Envelope, Request};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use lab1_memory::Lab1Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::{Handled, Probe, handle, memory};

/// Answers lab 1's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        VcpuRun::NAME => handle(body, |request: VcpuRun| Ok(vcpu_run(probe, &request))),
        HostAddress::NAME => handle(body, |request: HostAddress| host_address(probe, &request)),
        LoadImages::NAME => handle(body, |request: LoadImages| load_images(probe, &request)),
        _ => return None,
    })
}

fn lab_failure(function: &str, error: impl std::fmt::Display) -> LabFailure {
    LabFailure {
        function: function.to_owned(),
        error: error.to_string(),
    }
}

/// (start, length) of each region.
pub fn regions(memory: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    memory.iter().map(|r| (r.start_addr().0, r.len())).collect()
}

/// Writes the judge's bytes; a write outside the memory is skipped (the reads show it).
pub fn write_all(memory: &GuestMemoryMmap, writes: &[(u64, Vec<u8>)]) {
    for (addr, bytes) in writes {
        let _ = memory.write_slice(bytes, GuestAddress(*addr));
    }
}

/// Reads the judge's ranges (`None`: not all inside the memory).
pub fn read_all(memory: &GuestMemoryMmap, reads: &[(u64, u64)]) -> Vec<Option<Vec<u8>>> {
    reads
        .iter()
        .map(|&(addr, len)| {
            let mut bytes = vec![0u8; usize::try_from(len).ok()?.min(1 << 21)];
            memory.read_slice(&mut bytes, GuestAddress(addr)).ok().map(|()| bytes)
        })
        .collect()
}

/// Prepares the vCPU as the judge says (its segments and registers are the judge's data).
fn prepare(fd: &VcpuFd, setup: &CpuSetup) -> Result<(), String> {
    let mut sregs = fd.get_sregs().map_err(|err| format!("KVM_GET_SREGS failed: {err}"))?;
    sregs.cr0 |= setup.cr0_or;
    sregs.cs = setup.code;
    [sregs.ds, sregs.es, sregs.ss] = [setup.data; 3];
    fd.set_sregs(&sregs)
        .map_err(|err| format!("KVM_SET_SREGS failed: {err}"))?;
    fd.set_regs(&setup.regs)
        .map_err(|err| format!("KVM_SET_REGS failed: {err}"))
}

/// Runs `fd` until an exit other than an OUT, at most `max_exits` exits.
pub fn run_vcpu(fd: &mut VcpuFd, max_exits: u32) -> GuestRun {
    let mut outs = Vec::new();
    let mut stop = VcpuStop::TooManyExits;
    for _ in 0..max_exits {
        let (port, data) = match fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => (port, data.to_vec()),
            Ok(VcpuExit::Hlt) => {
                stop = VcpuStop::Hlt;
                break;
            }
            Ok(VcpuExit::MmioRead(addr, _)) => {
                stop = VcpuStop::MmioRead(addr);
                break;
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
                stop = VcpuStop::MmioWrite(addr);
                break;
            }
            Ok(other) => {
                stop = VcpuStop::Other(format!("{other:?}"));
                break;
            }
            Err(err) => {
                stop = VcpuStop::RunFailed(err.to_string());
                break;
            }
        };
        outs.push((port, data));
    }
    let rip = fd.get_regs().ok().map(|regs| regs.rip);
    GuestRun { outs, stop, rip }
}

/// A run that never started: why.
pub fn not_started(why: String) -> GuestRun {
    GuestRun {
        outs: Vec::new(),
        stop: VcpuStop::Setup(why),
        rip: None,
    }
}

/// `len` bytes at host address `address` of this process, or `None` when they are not all
/// mapped: the kernel copies them into a pipe, and answers EFAULT instead of a crash.
pub fn read_unchecked(address: u64, len: usize) -> Option<Vec<u8>> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills the two descriptors of a valid array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return None;
    }
    let mut bytes = vec![0u8; len];
    // SAFETY: write only reads `len` bytes at `address` in the kernel, which checks the mapping;
    // read fills our own buffer; both descriptors are ours and closed here.
    let ok = unsafe {
        let wrote = libc::write(fds[1], address as usize as *const libc::c_void, len);
        let read = if wrote == len as isize {
            libc::read(fds[0], bytes.as_mut_ptr().cast(), len)
        } else {
            -1
        };
        libc::close(fds[0]);
        libc::close(fds[1]);
        read == len as isize
    };
    ok.then_some(bytes)
}

fn vcpu_run(probe: &Probe, request: &VcpuRun) -> Result<VcpuRunReply, LabFailure> {
    let labs = &probe.labs;
    let vm = (labs.vm_init)(kit_common::GUEST_MEMORY_SIZE).map_err(|err| lab_failure("vm_init", err))?;
    write_all(&vm.memory, &request.writes);
    let mmap_size = Kvm::new()
        .and_then(|kvm| kvm.get_vcpu_mmap_size())
        .ok()
        .map(|s| s as u64);
    let mut reply = VcpuRunReply {
        regions: regions(&vm.memory),
        run_size: None,
        mmap_size,
        kvm_run_address: None,
        mapping: None,
        run: not_started(String::new()),
        reads: Vec::new(),
    };
    match request.vcpu {
        VcpuOf::Probe => match vm.fd.create_vcpu(0) {
            Ok(mut fd) => {
                reply.kvm_run_address = Some(fd.get_kvm_run() as *mut _ as u64);
                reply.run = match prepare(&fd, &request.setup) {
                    Ok(()) => run_vcpu(&mut fd, request.max_exits),
                    Err(why) => not_started(why),
                };
            }
            Err(err) => reply.run = not_started(format!("KVM_CREATE_VCPU failed: {err}")),
        },
        VcpuOf::Lab => {
            let mut vcpu = (labs.vcpu_init)(&vm).map_err(|err| lab_failure("vcpu_init", err))?;
            reply.run_size = Some(vcpu.run_size as u64);
            reply.kvm_run_address = Some(vcpu.fd.get_kvm_run() as *mut _ as u64);
            if let Err(why) = prepare(&vcpu.fd, &request.setup) {
                reply.run = not_started(why);
            } else {
                let mut outs = Vec::new();
                let mut max_exits = request.max_exits;
                if request.mapping_at_first_out {
                    match vcpu.fd.run() {
                        Ok(VcpuExit::IoOut(port, data)) => {
                            let data = data.to_vec();
                            // SAFETY: the `io` member of kvm_run's union is the one KVM filled
                            // for this KVM_EXIT_IO.
                            let offset = unsafe { vcpu.fd.get_kvm_run().__bindgen_anon_1.io.data_offset };
                            let mapping = (labs.kvm_run_mapping)(&mut vcpu);
                            reply.mapping = Some(MappingSeen {
                                address: mapping.address,
                                size: mapping.size as u64,
                                out_data_there: mapping
                                    .address
                                    .checked_add(offset)
                                    .and_then(|at| read_unchecked(at, data.len())),
                            });
                            outs.push((port, data));
                            max_exits = max_exits.saturating_sub(1);
                        }
                        first => {
                            // Not an OUT: report it as the run's stop.
                            let stop = match first {
                                Ok(VcpuExit::Hlt) => VcpuStop::Hlt,
                                Ok(VcpuExit::MmioRead(addr, _)) => VcpuStop::MmioRead(addr),
                                Ok(VcpuExit::MmioWrite(addr, _)) => VcpuStop::MmioWrite(addr),
                                Ok(other) => VcpuStop::Other(format!("{other:?}")),
                                Err(err) => VcpuStop::RunFailed(err.to_string()),
                            };
                            max_exits = 0;
                            reply.run = GuestRun {
                                outs: Vec::new(),
                                stop,
                                rip: None,
                            };
                        }
                    }
                }
                if max_exits > 0 {
                    let mut run = run_vcpu(&mut vcpu.fd, max_exits);
                    outs.append(&mut run.outs);
                    run.outs = outs;
                    reply.run = run;
                } else if !outs.is_empty() {
                    reply.run = GuestRun {
                        outs,
                        stop: VcpuStop::TooManyExits,
                        rip: None,
                    };
                }
            }
        }
    }
    reply.reads = read_all(&vm.memory, &request.reads);
    Ok(reply)
}

fn host_address(probe: &Probe, request: &HostAddress) -> Result<HostAddressSeen, String> {
    let memory = memory::fresh()?;
    memory
        .write_slice(&request.bytes, GuestAddress(request.at))
        .map_err(|err| format!("cannot write {:#x}: {err}", request.at))?;
    let actual = memory
        .get_host_address(GuestAddress(0))
        .map_err(|err| format!("vm-memory has no host address for 0: {err}"))? as u64;
    let returned = (probe.labs.guest_memory_host_address)(&memory);
    let found = returned
        .checked_add(request.at)
        .and_then(|at| read_unchecked(at, request.bytes.len()));
    Ok(HostAddressSeen {
        returned,
        actual,
        found,
    })
}

fn load_images(probe: &Probe, request: &LoadImages) -> Result<Vec<LoadSeen>, String> {
    let read_len = usize::try_from(request.read_len)
        .unwrap_or(usize::MAX)
        .min(kit_common::GUEST_MEMORY_SIZE);
    request
        .images
        .iter()
        .map(|image| {
            let memory = memory::fresh()?;
            let loaded = match (probe.labs.load_image)(&memory, image) {
                Ok(()) => Loaded::Ok,
                Err(Lab1Error::ImageTooLarge { len }) => Loaded::TooLarge(len as u64),
                Err(err) => Loaded::Error(err.to_string()),
            };
            let mut bytes = vec![0u8; read_len];
            memory
                .read_slice(&mut bytes, GuestAddress(0))
                .map_err(|err| format!("cannot read guest memory back: {err}"))?;
            Ok(LoadSeen { loaded, memory: bytes })
        })
        .collect()
}
