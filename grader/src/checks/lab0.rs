//! Lab 0: the LWN warm-up VM, checked on a real KVM. The VM's code runs with random AL and BL,
//! the memory slot is probed at random addresses with random values, and `run` serves code
//! made for this run: every check judges what the guest printed or stored.

use grader_protocol::lab0::{CreatedVmRun, CreatedVmSeen, LwnRun, SetupVcpuRun};
use grader_protocol::lab1::{GuestRun, LabFailure, VcpuStop};

use super::{Group, expect_field, fail};
use crate::facts::lwn::{CODE, CODE_ADDR, PAGE_SIZE, SERIAL_PORT};
use crate::rng::Rng;
use crate::{Check, Ctx, Part, Stop, describe, guestgen};

/// How long the lab's loop may take on code made for a run, in ms.
const MADE_RUN_LIMIT_MS: u64 = 5000;
/// The most exits the probe serves in its own runs: far more than the code makes.
const MAX_EXITS: u32 = 64;
/// `hlt`.
const HLT: u8 = 0xf4;

const LAB: u8 = 0;
/// Lab 0's checks all create a VM.
const KVM: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: true,
};

/// The checks of lab 0. (`e2e_lab_lwn`, graded with lab 0, lives with the end-to-end checks:
/// `super::e2e::LWN` follows these once e2e.rs is converted.)
pub const CHECKS: &[Check] = &[
    KVM.check(
        "lab0_create_vm",
        "create_vm: one page at 0x1000 holding the code",
        2,
        create_vm,
    ),
    // setup_vcpu runs on the VM create_vm made; run, on its page.
    KVM.check(
        "lab0_setup_vcpu",
        "setup_vcpu: CS = 0, RIP = 0x1000, AL = BL = 2",
        2,
        setup_vcpu,
    )
    .explained_by(&["lab0_create_vm"]),
    KVM.check(
        "lab0_memory_slot",
        "create_vm registers its page at 0x1000, writable, as that memory",
        1,
        memory_slot,
    )
    .explained_by(&["lab0_create_vm"]),
    KVM.check(
        "lab0_run",
        "run prints the LWN code's digit and a guest made for this run, counting their exits",
        2,
        run,
    )
    .explained_by(&["lab0_create_vm", "lab0_memory_slot"]),
    // Lab 0's other checks first: a failure of theirs blocks this one.
    Check {
        needs: &[0],
        ..KVM.check(
            "e2e_lab_lwn",
            "kvm-hello --lab lwn --guest (made for this run) --json: its output and exits",
            1,
            lab_lwn_program,
        )
    },
];

/// kvm-hello as a program on lab 0: `--lab lwn` with real-mode code made for this run in the
/// VM's page (random text on a random port), judged by what it printed and its exits.
fn lab_lwn_program(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let text: Vec<u8> = (0..rng.range(3, 24)).map(|_| rng.range(0x21, 0x7f) as u8).collect();
    let guest = guestgen::lwn(&text, SERIAL_PORT);
    let args: Vec<String> = ["--lab", "lwn", "--json"].map(String::from).to_vec();
    let (report, run) = super::vmm_report(ctx, guest.image.clone(), args, LAB)?;
    let stderr = String::from_utf8_lossy(&run.stderr).trim_end().to_owned();
    let program_fail = |what: String| -> Stop {
        Stop::Failed(format!(
            "kvm-hello --guest GUEST --lab lwn --json: {what} (its stderr: {stderr:?}) (book: {})",
            super::chapter(LAB)
        ))
    };
    if run.status != Some(0) {
        let line = stderr.strip_prefix("kvm-hello: ").unwrap_or(&stderr);
        return Err(program_fail(format!(
            "exit status {:?}, expected 0: {line}",
            run.status
        )));
    }
    let printed = report["output"].as_str().unwrap_or_default().as_bytes();
    if printed != text.as_slice() {
        return Err(program_fail(super::output_difference(printed, &text)));
    }
    // The exits the guest must cause: one OUT per byte it printed, then its HLT.
    let (io, hlt) = (report["exits"]["io"].as_u64(), report["exits"]["hlt"].as_u64());
    if io != Some(text.len() as u64) || hlt != Some(1) {
        return Err(program_fail(format!(
            "the report counts io {io:?} and hlt {hlt:?}; the guest made {} OUTs, then one HLT",
            text.len()
        )));
    }
    Ok(())
}

fn lab_failed(failure: LabFailure) -> Stop {
    Stop::Failed(fail(LAB, &failure.function, failure.error))
}

fn malformed() -> Stop {
    Stop::Failed("the probe's answer is malformed: lab code must not write on descriptor 3".into())
}

/// Random AX and BX, and the byte the LWN code prints with them (AL + BL + '0').
struct Start {
    ax: u16,
    bx: u16,
}

impl Start {
    fn random(rng: &mut Rng) -> Start {
        Start {
            ax: rng.range(0, 1 << 16) as u16,
            bx: rng.range(0, 1 << 16) as u16,
        }
    }

    fn digit(&self) -> u8 {
        (self.ax as u8).wrapping_add(self.bx as u8).wrapping_add(b'0')
    }

    /// 16-bit code for the reset vector (a vCPU fresh from reset runs it in real mode):
    /// `mov ax, imm16; mov bx, imm16; jmp far 0:0x1000`.
    fn reset_code(&self) -> Vec<u8> {
        let mut code = vec![0xb8];
        code.extend_from_slice(&self.ax.to_le_bytes());
        code.push(0xbb);
        code.extend_from_slice(&self.bx.to_le_bytes());
        code.push(0xea);
        code.extend_from_slice(&(CODE_ADDR as u16).to_le_bytes());
        code.extend_from_slice(&0u16.to_le_bytes());
        code
    }
}

/// What the stop of a run of the page's code says about the slot; `probes` are the addresses
/// the code reads and writes.
fn slot_problem(run: &GuestRun, probes: &[u64]) -> Option<String> {
    let nothing_ran = run.rip == Some(CODE_ADDR) && run.outs.is_empty();
    match &run.stop {
        VcpuStop::Hlt => None,
        VcpuStop::MmioRead(addr) if *addr & !(PAGE_SIZE - 1) == CODE_ADDR && !probes.contains(addr) => Some(format!(
            "the vCPU found no memory at guest physical {addr:#x} to fetch the code from: register the page as slot 0 at guest_phys_addr 0x1000"
        )),
        VcpuStop::MmioRead(addr) if !probes.contains(addr) || nothing_ran => Some(format!(
            "the vCPU the grader started at CS:IP = 0:0x1000 read guest physical {addr:#x}, where no memory is registered, before the code's first OUT: memory registered where the code is not (the page must be slot 0 at guest_phys_addr 0x1000), or code at 0x1000 that is not the LWN code"
        )),
        VcpuStop::MmioRead(addr) => Some(format!(
            "the vCPU found no memory at guest physical {addr:#x}: the slot must cover the whole page at 0x1000 (memory_size 0x1000)"
        )),
        VcpuStop::MmioWrite(addr) => Some(format!(
            "the guest could read but not write guest physical {addr:#x}: the slot is registered read-only (flags must be 0, not KVM_MEM_READONLY)"
        )),
        VcpuStop::Other(exit) if nothing_ran => Some(format!(
            "the vCPU the grader started at CS:IP = 0:0x1000 ended with {exit} at 0x1000 before the code's first OUT: KVM could not run what is at guest physical 0x1000; either no memory is registered there (the page must be slot 0 at guest_phys_addr 0x1000), or the page registered there is not the one that holds the code"
        )),
        VcpuStop::Other(exit) => Some(format!(
            "the vCPU did not run the code written at 0x1000 of the memory create_vm returned (it ended with {exit}): register that memory's host address as the slot's userspace_addr"
        )),
        VcpuStop::TooManyExits => Some(format!(
            "the vCPU made more than {MAX_EXITS} exits without reaching the code's HLT: it does not run the code in the memory create_vm returned; register that memory's host address as the slot's userspace_addr"
        )),
        VcpuStop::RunFailed(err) => Some(format!(
            "KVM_RUN of the grader's vCPU in this VM failed: {err} (a slot KVM cannot use, or a fault of the host)"
        )),
        VcpuStop::Setup(err) => Some(format!(
            "the grader could not set up a vCPU of the VM create_vm returned: {err}"
        )),
    }
}

fn created_vm_run(ctx: &mut Ctx, request: &CreatedVmRun) -> Result<CreatedVmSeen, Stop> {
    let seen = ctx.call(request)?.map_err(lab_failed)?;
    if seen.before.len() != request.reads_before.len() || seen.after.len() != request.reads_after.len() {
        return Err(malformed());
    }
    Ok(seen)
}

fn create_vm(ctx: &mut Ctx) -> Result<(), Stop> {
    let start = Start::random(&mut ctx.rng());
    let digit = start.digit();
    let seen = created_vm_run(
        ctx,
        &CreatedVmRun {
            reset_code: start.reset_code(),
            writes: Vec::new(),
            reads_before: vec![(CODE_ADDR, CODE.len() as u64)],
            reads_after: Vec::new(),
            max_exits: MAX_EXITS,
        },
    )?;
    if seen.regions != [(CODE_ADDR, PAGE_SIZE)] {
        return Err(fail(
            LAB,
            "create_vm",
            format!(
                "guest memory has regions {:x?}, expected one page [(0x1000, 0x1000)]: the LWN VM has 4 KiB at guest physical 0x1000",
                seen.regions
            ),
        )
        .into());
    }
    let code = seen.before[0].clone().unwrap_or_default();
    if code != CODE {
        return Err(fail(
            LAB,
            "create_vm",
            format!("guest physical 0x1000 holds {code:02x?}, expected the code {CODE:02x?}"),
        )
        .into());
    }
    if let Some(problem) = slot_problem(&seen.run, &[]) {
        return Err(fail(LAB, "create_vm", problem).into());
    }
    let printed = seen.run.printed_on(SERIAL_PORT);
    let expected = [digit, b'\n'];
    if printed != expected || seen.run.outs.len() != 2 {
        let what = format!(
            "the VM's code, run with AL = {:#x} and BL = {:#x}, printed {:?} on port 0x3f8, expected {:?}: the slot must be the page that holds the code",
            start.ax as u8,
            start.bx as u8,
            String::from_utf8_lossy(&printed),
            String::from_utf8_lossy(&expected)
        );
        return Err(fail(LAB, "create_vm", what).into());
    }
    Ok(())
}

/// Real-mode code: `mov dx, port; add al, bl; add al, key; out dx, al`, one `mov al, b;
/// out dx, al` per byte of `text`, `hlt`: it prints AL + BL + key, then the text.
fn setup_code(port: u16, key: u8, text: &[u8]) -> Vec<u8> {
    let mut code = vec![0xba];
    code.extend_from_slice(&port.to_le_bytes());
    code.extend_from_slice(&[0x00, 0xd8, 0x04, key, 0xee]); // add al, bl; add al, key; out dx, al
    for &byte in text {
        code.extend_from_slice(&[0xb0, byte, 0xee]);
    }
    code.push(HLT);
    code
}

fn setup_vcpu(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let port = rng.range(0x200, 0x400) as u16;
    let key = rng.range(0, 256) as u8;
    let text = rng.text_between(1, 12);
    let seen = ctx
        .call(&SetupVcpuRun {
            code: setup_code(port, key, &text),
            max_exits: MAX_EXITS,
        })?
        .map_err(lab_failed)?;
    let regs = seen.registers.map_err(Stop::Failed)?;
    let cs_why = "after reset CS.base is 0xffff0000; CS:IP = 0:0x1000 needs CS base and selector 0";
    expect_field(LAB, "setup_vcpu", "CS.base", regs.cs_base, 0, describe::hex, cs_why)?;
    expect_field(
        LAB,
        "setup_vcpu",
        "CS.selector",
        regs.cs_selector.into(),
        0,
        describe::hex,
        cs_why,
    )?;
    expect_field(
        LAB,
        "setup_vcpu",
        "RIP",
        regs.rip,
        CODE_ADDR,
        describe::hex,
        "the code starts at guest physical 0x1000",
    )?;
    let both = "the guest adds AL and BL: both start at 2";
    expect_field(LAB, "setup_vcpu", "RAX", regs.rax, 2, describe::hex, both)?;
    expect_field(LAB, "setup_vcpu", "RBX", regs.rbx, 2, describe::hex, both)?;
    expect_field(
        LAB,
        "setup_vcpu",
        "RFLAGS",
        regs.rflags,
        2,
        describe::hex,
        "bit 1 of RFLAGS is reserved and must be 1",
    )?;
    // The effect: code made for this run prints AL + BL + a random key, then a random text.
    let mut expected = vec![4u8.wrapping_add(key)];
    expected.extend_from_slice(&text);
    let printed = seen.run.printed_on(port);
    if seen.run.stop != VcpuStop::Hlt || printed != expected || seen.run.outs.len() != expected.len() {
        let what = format!(
            "the vCPU it returned, run on code made for this run at 0x1000 (prints AL + BL + {key:#x}, then {} bytes, on port {port:#x}), printed {:?} and stopped at {:?}, expected {:?} and HLT: the vCPU must start at CS:IP = 0:0x1000 in real mode with AL = BL = 2",
            text.len(),
            String::from_utf8_lossy(&printed),
            seen.run.stop,
            String::from_utf8_lossy(&expected)
        );
        return Err(fail(LAB, "setup_vcpu", what).into());
    }
    Ok(())
}

/// Real-mode code at 0x1000: for each address `mov al, [a]; xor al, key; mov [a], al`, `hlt`.
fn slot_code(probes: &[u64], key: u8) -> Vec<u8> {
    let mut code = Vec::new();
    for &addr in probes {
        let [lo, hi] = (addr as u16).to_le_bytes();
        code.extend_from_slice(&[0xa0, lo, hi, 0x34, key, 0xa2, lo, hi]);
    }
    code.push(HLT);
    code
}

fn memory_slot(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let end = CODE_ADDR + PAGE_SIZE;
    // The last 16 bytes (the whole page must be there), and random addresses above the code.
    let mut probes = vec![end - 16 + rng.range(0, 16)];
    while probes.len() < 3 {
        let addr = rng.range(CODE_ADDR + 0x100, end);
        if !probes.contains(&addr) {
            probes.push(addr);
        }
    }
    rng.shuffle(&mut probes);
    let values: Vec<u8> = probes.iter().map(|_| rng.range(0, 256) as u8).collect();
    let key = rng.range(1, 256) as u8;
    let start = Start::random(&mut rng);
    let mut writes = vec![(CODE_ADDR, slot_code(&probes, key))];
    writes.extend(probes.iter().zip(&values).map(|(&a, &v)| (a, vec![v])));
    let seen = created_vm_run(
        ctx,
        &CreatedVmRun {
            reset_code: start.reset_code(),
            writes,
            reads_before: Vec::new(),
            reads_after: probes.iter().map(|&a| (a, 1)).collect(),
            max_exits: MAX_EXITS,
        },
    )?;
    if let Some(problem) = slot_problem(&seen.run, &probes) {
        return Err(fail(LAB, "create_vm", problem).into());
    }
    for ((&addr, &value), found) in probes.iter().zip(&values).zip(&seen.after) {
        let stored = value ^ key;
        let held = found.as_deref().and_then(|b| b.first().copied());
        if held != Some(stored) {
            let held = held.map_or("nothing".to_owned(), |b| b.to_string());
            return Err(fail(
                LAB,
                "create_vm",
                format!(
                    "the guest read {value} at guest physical {addr:#x} and stored {stored} there, but the memory create_vm returned holds {held} there: the slot's userspace_addr must be that memory's host address"
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// One run of the lab's `run` on `code` with `start`, judged by what it printed and counted.
fn judge_run(ctx: &mut Ctx, what: &str, code: Vec<u8>, start: &Start, expected: &[u8]) -> Result<(), Stop> {
    let seen = ctx
        .call(&LwnRun {
            code,
            reset_code: start.reset_code(),
            limit_ms: MADE_RUN_LIMIT_MS,
        })?
        .map_err(lab_failed)?;
    let Some(result) = seen.result else {
        return Err(fail(
            LAB,
            "run",
            format!(
                "{what} had not halted after {} s: leave the loop at HLT",
                MADE_RUN_LIMIT_MS / 1000
            ),
        )
        .into());
    };
    result.map_err(|err| fail(LAB, "run", format!("{what}: {err}")))?;
    if seen.console != expected {
        return Err(fail(
            LAB,
            "run",
            format!(
                "{what} (one OUT to 0x3f8 per byte) {}",
                super::output_difference(&seen.console, expected)
            ),
        )
        .into());
    }
    // The counts are the lab's own record: the output above confirms the exits they count.
    let exits = expected.len() as u64 + 1;
    let out = exits - 1;
    let (total, io_out, hlt) = seen.counts;
    if (total, io_out, hlt) != (exits, out, 1) {
        return Err(fail(
            LAB,
            "run",
            format!(
                "{what} made {total} exits (io_out {io_out}, hlt {hlt}), expected {exits} (io_out {out}, hlt 1): count every exit once, under its reason"
            ),
        )
        .into());
    }
    Ok(())
}

fn run(ctx: &mut Ctx) -> Result<(), Stop> {
    let mut rng = ctx.rng();
    let start = Start::random(&mut rng);
    let digit = start.digit();
    let lwn_what = format!(
        "the LWN code with AL = {:#x} and BL = {:#x}",
        start.ax as u8, start.bx as u8
    );
    let text = rng.text_between(2, 24);
    let made = guestgen::lwn(&text, SERIAL_PORT);
    let made_start = Start::random(&mut rng);
    if rng.chance(50) {
        judge_run(ctx, "code made for this run", made.image, &made_start, &made.output)?;
        judge_run(ctx, &lwn_what, CODE.to_vec(), &start, &[digit, b'\n'])
    } else {
        judge_run(ctx, &lwn_what, CODE.to_vec(), &start, &[digit, b'\n'])?;
        judge_run(ctx, "code made for this run", made.image, &made_start, &made.output)
    }
}
