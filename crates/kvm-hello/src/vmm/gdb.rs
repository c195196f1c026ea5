//! `kvm-hello --gdb ADDR`: the GDB remote protocol (gdbstub, gdbstub_arch) for the guest that the
//! labs set up, served on the vCPU thread under the run's watchdog.
//!
//! - Registers: the general ones, RIP, RFLAGS and the segment selectors (`monitor sregs` shows
//!   the control registers, which gdb's x86 register set leaves out).
//! - Memory: by guest virtual address through lab 2's walk (long mode) or the segment's linear
//!   address (protected mode); by guest physical address with `monitor phys ADDR [LEN]`.
//! - Breakpoints: the four debug registers, for `hbreak` and `break` alike (`int3` does not work
//!   on every host: PVM ends it in an internal error). Where the host's breakpoints do not fire
//!   (KVM on emulated SVM), `continue` steps to them instead (`probe_hw_breakpoints`).
//! - Ctrl-C: the watchdog's kick interrupts `KVM_RUN`.
//! - The guest's exits are served by lab 4's `handle_exit`: port 0xE9 still goes to stdout.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::outputln;
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep, SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::{X86_64CoreRegs, X86CoreRegs, X86SegmentRegs};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};
use iced_x86::{Decoder, DecoderOptions, FlowControl, OpKind};
use kit_common::Mode;
use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, kvm_guest_debug, kvm_regs, kvm_sregs,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use lab4_exit_loop::{ExitCounts, ExitLoopError, Flow};

use super::stepper::{self, GuestView};
use super::watchdog::Watchdog;
use crate::report;
use crate::step::{self, MAX_INSTRUCTION_LEN};

/// The debug registers that hold breakpoint addresses: DR0 to DR3.
pub const HW_BREAKPOINTS: usize = 4;
/// How often the Ctrl-C watcher looks at the connection while the guest runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);
/// DR6's bits B0-B3: which breakpoint fired.
const DR6_BREAKPOINT_HIT: u64 = 0xf;
/// A page, the unit in which guest virtual memory is translated.
const PAGE: u64 = 0x1000;

/// What `--gdb` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdbOptions {
    /// Where to listen (loopback; port 0 picks a free one).
    pub address: SocketAddr,
    /// `continue` steps to breakpoints instead of setting the debug registers, as on hosts
    /// whose debug registers do not fire (the probe decides otherwise; tests set it to run the
    /// path those hosts take).
    pub step_to_breakpoints: bool,
}

/// How a gdb session ended without an error of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GdbEnd {
    /// The guest halted (under gdb or after it detached).
    Halted,
    /// The session ended without the guest halting: gdb killed it, or went away.
    Ended(String),
    /// The address could not be listened on.
    CannotListen(String),
}

/// Which kind of breakpoint gdb asked for in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// `hbreak` (Z1).
    Hardware,
    /// `break` (Z0), served by a debug register too.
    Software,
}

/// The four debug-register slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slots {
    slots: [Option<(u64, BreakKind)>; HW_BREAKPOINTS],
}

impl Slots {
    /// Puts a breakpoint in a free slot; false when all four are taken.
    pub fn add(&mut self, addr: u64, kind: BreakKind) -> bool {
        match self.slots.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some((addr, kind));
                true
            }
            None => false,
        }
    }

    /// Frees the slot of a breakpoint; false when there is none.
    pub fn remove(&mut self, addr: u64, kind: BreakKind) -> bool {
        match self.slots.iter_mut().find(|slot| **slot == Some((addr, kind))) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// The breakpoint at `addr`, if there is one.
    pub fn at(&self, addr: u64) -> Option<BreakKind> {
        self.slots
            .iter()
            .flatten()
            .find(|(a, _)| *a == addr)
            .map(|(_, kind)| *kind)
    }

    /// Whether no breakpoint is set.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// DR0-DR3 and DR7 as `kvm_guest_debug` takes them: each used slot enabled locally (L0-L3)
    /// as an instruction breakpoint (R/W = 00, LEN = 00).
    pub fn debugreg(&self) -> [u64; 8] {
        let mut regs = [0; 8];
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some((addr, _)) = slot {
                regs[i] = *addr;
                regs[7] |= 1 << (2 * i);
            }
        }
        regs
    }

    /// The kind of breakpoint in the slot DR6 says fired.
    fn fired(&self, dr6: u64) -> Option<BreakKind> {
        (0..HW_BREAKPOINTS)
            .find(|i| dr6 & (1 << i) != 0)
            .and_then(|i| self.slots[i])
            .map(|(_, kind)| kind)
    }
}

/// What the guest did when it ran for gdb.
enum Ran {
    Stopped(SingleThreadStopReason<u64>),
    /// gdb sent something (Ctrl-C) while the guest ran.
    Interrupted,
}

/// How gdb asked the guest to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Continue,
    Step,
}

/// The guest as gdb sees it, whatever its mode: the arch-specific targets below wrap it.
struct Guest<'a, 'g> {
    vcpu: &'a mut VcpuFd,
    view: &'a GuestView<'g>,
    watchdog: &'a Watchdog,
    console: &'a mut dyn Write,
    counts: &'a mut ExitCounts,
    kvm_run: u64,
    slots: Slots,
    resume: Resume,
    /// Whether this host's debug registers stop the guest (`probe_hw_breakpoints`).
    hw_breakpoints_fire: bool,
    /// Set once the guest halted or failed: the run's outcome.
    outcome: Option<Result<(), ExitLoopError>>,
    /// Set by the Ctrl-C watcher before it kicks the vCPU: a kick can be lost between two
    /// `KVM_RUN`s (completing an OUT clears `immediate_exit`), this flag cannot.
    interrupted: std::sync::Arc<AtomicBool>,
}

/// A fatal error of the stub (KVM refused a register ioctl).
#[derive(Debug)]
pub struct StubError(String);

impl std::fmt::Display for StubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn kvm_failed(what: &str) -> impl Fn(kvm_ioctls::Error) -> StubError + '_ {
    move |err| StubError(format!("{what} failed: {err}"))
}

impl Guest<'_, '_> {
    fn regs(&self) -> Result<(kvm_regs, kvm_sregs), StubError> {
        let regs = self.vcpu.get_regs().map_err(kvm_failed("KVM_GET_REGS"))?;
        let sregs = self.vcpu.get_sregs().map_err(kvm_failed("KVM_GET_SREGS"))?;
        Ok((regs, sregs))
    }

    fn segments(sregs: &kvm_sregs) -> X86SegmentRegs {
        X86SegmentRegs {
            cs: sregs.cs.selector.into(),
            ss: sregs.ss.selector.into(),
            ds: sregs.ds.selector.into(),
            es: sregs.es.selector.into(),
            fs: sregs.fs.selector.into(),
            gs: sregs.gs.selector.into(),
        }
    }

    /// The guest physical address of a guest virtual one (a flat data segment: linear = virtual).
    fn physical(&self, gva: u64) -> Option<u64> {
        self.view.physical(self.vcpu, gva)
    }

    fn read_virtual(&mut self, start: u64, data: &mut [u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            let gva = start.wrapping_add(done as u64);
            let in_page = ((PAGE - gva % PAGE) as usize).min(data.len() - done);
            let Some(gpa) = self.physical(gva) else { break };
            let read = self.view.read_physical(gpa, &mut data[done..done + in_page]);
            done += read;
            if read < in_page {
                break;
            }
        }
        done
    }

    fn write_virtual(&mut self, start: u64, data: &[u8]) -> bool {
        use vm_memory::{Bytes, GuestAddress};
        let mut done = 0;
        while done < data.len() {
            let gva = start.wrapping_add(done as u64);
            let in_page = ((PAGE - gva % PAGE) as usize).min(data.len() - done);
            let Some(gpa) = self.physical(gva) else { return false };
            if self
                .view
                .memory
                .write_slice(&data[done..done + in_page], GuestAddress(gpa))
                .is_err()
            {
                return false;
            }
            done += in_page;
        }
        true
    }

    fn set_debug(&self, single_step: bool) -> Result<(), ExitLoopError> {
        let mut debug = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE,
            ..Default::default()
        };
        if single_step {
            debug.control |= KVM_GUESTDBG_SINGLESTEP;
        }
        // Where they do not fire, breakpoints are RIP compared after each step instead.
        if self.hw_breakpoints_fire {
            debug.control |= KVM_GUESTDBG_USE_HW_BP;
            debug.arch.debugreg = self.slots.debugreg();
        }
        self.vcpu.set_guest_debug(&debug).map_err(ExitLoopError::Run)
    }

    /// The stop reason of a guest that halted or failed (and records the outcome).
    fn finished(&mut self, outcome: Result<(), ExitLoopError>) -> Ran {
        let reason = match &outcome {
            // gdb shows the guest's return value: "exited with code 052" is 42.
            Ok(()) => SingleThreadStopReason::Exited(self.vcpu.get_regs().map_or(0, |r| r.rax as u8)),
            Err(ExitLoopError::Run(err)) if err.errno() == libc::EINTR => {
                SingleThreadStopReason::Terminated(Signal::SIGXCPU)
            }
            Err(_) => SingleThreadStopReason::Terminated(Signal::SIGSEGV),
        };
        self.outcome = Some(outcome);
        Ran::Stopped(reason)
    }

    /// A `KVM_RUN` that returned an error: the watchdog's stop, gdb's Ctrl-C, or a failure.
    fn run_error(&mut self, err: ExitLoopError) -> Ran {
        match &err {
            ExitLoopError::Run(e) if e.errno() == libc::EINTR && self.watchdog.stopped().is_none() => {
                self.vcpu.set_kvm_immediate_exit(0);
                if self.interrupted.load(Ordering::Acquire) {
                    Ran::Interrupted
                } else {
                    // A late kick of an earlier Ctrl-C watch: nothing ran, gdb sent nothing.
                    Ran::Stopped(SingleThreadStopReason::DoneStep)
                }
            }
            _ => self.finished(Err(err)),
        }
    }

    /// One instruction, as `--step` runs it.
    fn step_once(&mut self) -> Ran {
        if let Err(err) = self.set_debug(true) {
            return self.finished(Err(err));
        }
        let Ok((before, sregs)) = self.regs() else {
            return Ran::Stopped(SingleThreadStopReason::Terminated(Signal::SIGSEGV));
        };
        let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
        let fetched = self.read_virtual(before.rip, &mut bytes);
        let halts = step::decode(&bytes[..fetched], step::bitness(&sregs.cs), before.rip).halts;
        let mut exits = Vec::new();
        let ran = stepper::run_one(
            self.vcpu,
            self.view.labs,
            self.console,
            self.counts,
            self.kvm_run,
            &mut exits,
        );
        let ran = match ran {
            Ok(false) if halts && exits.is_empty() => {
                let exit = VcpuExit::Hlt;
                (self.view.labs.handle_exit)(exit, self.console, self.counts).map(|flow| flow == Flow::Halt)
            }
            other => other,
        };
        match ran {
            Ok(true) => self.finished(Ok(())),
            Ok(false) => Ran::Stopped(SingleThreadStopReason::DoneStep),
            Err(err) => self.run_error(err),
        }
    }

    /// Runs until a breakpoint, a halt, a failure or gdb's Ctrl-C.
    fn run_on(&mut self) -> Ran {
        if self.watchdog.stopped().is_some() {
            return self.finished(Err(ExitLoopError::Run(kvm_ioctls::Error::new(libc::EINTR))));
        }
        self.vcpu.set_kvm_immediate_exit(0);
        if self.resume == Resume::Step {
            return self.step_once();
        }
        let rip = self.vcpu.get_regs().map_or(0, |r| r.rip);
        // Leave a breakpoint at RIP first (it would fire again at once on hardware).
        if self.slots.at(rip).is_some() {
            match self.step_once() {
                Ran::Stopped(SingleThreadStopReason::DoneStep) => {}
                other => return other,
            }
        }
        if !self.hw_breakpoints_fire && !self.slots.is_empty() {
            return self.step_to_a_breakpoint();
        }
        if let Err(err) = self.set_debug(false) {
            return self.finished(Err(err));
        }
        loop {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                // A late kick of an earlier Ctrl-C watch: run on.
                Err(err)
                    if err.errno() == libc::EINTR
                        && self.watchdog.stopped().is_none()
                        && !self.interrupted.load(Ordering::Acquire) =>
                {
                    self.vcpu.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(err) => return self.run_error(ExitLoopError::Run(err)),
            };
            if let VcpuExit::Debug(arch) = exit {
                return Ran::Stopped(match self.slots.fired(arch.dr6) {
                    Some(BreakKind::Software) => SingleThreadStopReason::SwBreak(()),
                    _ if arch.dr6 & DR6_BREAKPOINT_HIT != 0 => SingleThreadStopReason::HwBreak(()),
                    _ => SingleThreadStopReason::Signal(Signal::SIGTRAP),
                });
            }
            match (self.view.labs.handle_exit)(exit, self.console, self.counts) {
                Ok(Flow::Continue) if self.interrupted.load(Ordering::Acquire) => return Ran::Interrupted,
                Ok(Flow::Continue) => {}
                Ok(Flow::Halt) => return self.finished(Ok(())),
                Err(err) => return self.finished(Err(err)),
            }
        }
    }

    /// `continue` where the debug registers do not fire: one instruction at a time until RIP
    /// reaches a breakpoint.
    fn step_to_a_breakpoint(&mut self) -> Ran {
        loop {
            match self.step_once() {
                Ran::Stopped(SingleThreadStopReason::DoneStep) => {}
                other => return other,
            }
            if self.interrupted.load(Ordering::Acquire) {
                return Ran::Interrupted;
            }
            let rip = self.vcpu.get_regs().map_or(0, |r| r.rip);
            match self.slots.at(rip) {
                Some(BreakKind::Software) => return Ran::Stopped(SingleThreadStopReason::SwBreak(())),
                Some(BreakKind::Hardware) => return Ran::Stopped(SingleThreadStopReason::HwBreak(())),
                None => {}
            }
        }
    }

    fn add_breakpoint(&mut self, addr: u64, kind: BreakKind) -> bool {
        let added = self.slots.add(addr, kind);
        if !added {
            report::print_summary_line(&format!(
                "gdb asked for a fifth breakpoint, at {addr:#x}: kvm-hello uses the {HW_BREAKPOINTS} debug registers \
                 DR0-DR3 for breakpoints; delete one first (book: Debugging your guest)"
            ));
        }
        added
    }

    /// `monitor ...`: what gdb's register set and address space leave out.
    fn monitor(&mut self, command: &str, mut out: ConsoleOutput<'_>) {
        let words: Vec<&str> = command.split_whitespace().collect();
        let number = |text: &str| {
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            }
        };
        match words.as_slice() {
            ["phys", addr, rest @ ..] => {
                let (Some(addr), Some(len)) = (number(addr), rest.first().map_or(Some(16), |l| number(l))) else {
                    outputln!(out, "usage: monitor phys ADDR [LEN]");
                    return;
                };
                let mut bytes = vec![0u8; len.min(4096) as usize];
                let read = self.view.read_physical(addr, &mut bytes);
                for (i, line) in bytes[..read].chunks(16).enumerate() {
                    let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                    outputln!(out, "{:#010x}: {}", addr + 16 * i as u64, hex.join(" "));
                }
                if read < bytes.len() {
                    outputln!(out, "(guest physical memory ends at {:#x})", addr + read as u64);
                }
            }
            ["walk", gva] => {
                let Some(gva) = number(gva) else {
                    outputln!(out, "usage: monitor walk GVA");
                    return;
                };
                if self.view.mode != Mode::Long {
                    outputln!(
                        out,
                        "no lab 2 walk in this mode: {gva:#x} is translated by the segment's base"
                    );
                    return;
                }
                let walk = (self.view.labs.translate)(self.view.memory, self.view.cr3, gva);
                for s in &walk.steps {
                    outputln!(
                        out,
                        "{:?}[{}] at {:#x} = {:#x}",
                        s.level,
                        s.index,
                        s.entry_addr,
                        s.entry
                    );
                }
                match walk.result {
                    Ok(gpa) => outputln!(out, "{gva:#x} -> guest physical {gpa:#x}"),
                    Err(fault) => outputln!(out, "{gva:#x}: {fault:?}"),
                }
            }
            ["sregs"] => match self.regs() {
                Ok((_, s)) => {
                    outputln!(
                        out,
                        "cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                        s.cr0,
                        s.cr2,
                        s.cr3,
                        s.cr4,
                        s.efer
                    );
                    for (name, seg) in [("cs", s.cs), ("ds", s.ds), ("ss", s.ss)] {
                        outputln!(
                            out,
                            "{name} selector {:#x} base {:#x} limit {:#x} type {} dpl {} db {} l {}",
                            seg.selector,
                            seg.base,
                            seg.limit,
                            seg.type_,
                            seg.dpl,
                            seg.db,
                            seg.l
                        );
                    }
                }
                Err(err) => outputln!(out, "{}", err.0),
            },
            _ => {
                outputln!(out, "kvm-hello's monitor commands:");
                outputln!(
                    out,
                    "  monitor phys ADDR [LEN]  guest physical memory (default 16 bytes)"
                );
                outputln!(
                    out,
                    "  monitor walk GVA         lab 2's page walk of a guest virtual address (long mode)"
                );
                outputln!(
                    out,
                    "  monitor sregs            CR0, CR2, CR3, CR4, EFER and the code, data and stack segments"
                );
                let how = if self.hw_breakpoints_fire {
                    "the debug registers DR0-DR3 (they fire on this host)"
                } else {
                    "RIP compared after each step (this host's debug registers do not fire)"
                };
                outputln!(out, "breakpoints (at most {HW_BREAKPOINTS}): {how}");
            }
        }
    }
}

/// Whether this host's debug registers stop the guest: one probe at the first instruction, when
/// running it twice is harmless (it writes no memory, does no I/O and does not branch), with the
/// registers put back if it ran. Hosts are assumed to be like hardware otherwise.
fn probe_hw_breakpoints(vcpu: &mut VcpuFd, first: &[u8], bitness: u32) -> bool {
    let Ok(before) = vcpu.get_regs() else { return true };
    let mut decoder = Decoder::with_ip(bitness, first, before.rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    let harmless = !instruction.is_invalid()
        && instruction.flow_control() == FlowControl::Next
        && !instruction.is_string_instruction()
        && !matches!(
            instruction.mnemonic(),
            iced_x86::Mnemonic::In | iced_x86::Mnemonic::Out | iced_x86::Mnemonic::Hlt
        )
        && (0..instruction.op_count()).all(|i| instruction.op_kind(i) != OpKind::Memory);
    if !harmless {
        return true;
    }
    let mut debug = kvm_guest_debug {
        control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP | KVM_GUESTDBG_SINGLESTEP,
        ..Default::default()
    };
    debug.arch.debugreg[0] = before.rip;
    debug.arch.debugreg[7] = 1;
    if vcpu.set_guest_debug(&debug).is_err() {
        return true;
    }
    let fired = match vcpu.run() {
        Ok(VcpuExit::Debug(arch)) => arch.dr6 & 1 != 0,
        _ => true,
    };
    // If the instruction ran, it changed registers only: put them back.
    let _ = vcpu.set_regs(&before);
    fired
}

/// Serves gdb on `options.address` until the guest halts, gdb detaches (the guest then runs on
/// to its end with lab 4's loop) or kills it. The caller has armed the watchdog.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve(
    options: GdbOptions,
    vcpu: &mut VcpuFd,
    view: &GuestView<'_>,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    kvm_run: u64,
) -> Result<GdbEnd, ExitLoopError> {
    let listener = match TcpListener::bind(options.address) {
        Ok(listener) => listener,
        Err(err) => {
            return Ok(GdbEnd::CannotListen(format!(
                "cannot listen on {}: {err}",
                options.address
            )));
        }
    };
    let bound = listener.local_addr().map_or(options.address, |a| a);
    let first_bytes = {
        let regs = vcpu.get_regs().map_err(ExitLoopError::Run)?;
        let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
        let fetched = view
            .physical(vcpu, regs.rip)
            .map_or(0, |gpa| view.read_physical(gpa, &mut bytes));
        bytes[..fetched].to_vec()
    };
    let bitness = vcpu.get_sregs().map_or(64, |s| step::bitness(&s.cs));
    let hw_breakpoints_fire = !options.step_to_breakpoints && probe_hw_breakpoints(vcpu, &first_bytes, bitness);
    report::print_summary_line(&format!("waiting for gdb on {bound}"));
    let stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(err) => return Ok(GdbEnd::Ended(format!("gdb could not connect: {err}"))),
    };
    drop(listener);
    let _ = stream.set_nodelay(true);
    let mut guest = Guest {
        vcpu,
        view,
        watchdog,
        console,
        counts,
        kvm_run,
        slots: Slots::default(),
        resume: Resume::Step,
        hw_breakpoints_fire,
        outcome: None,
        interrupted: std::sync::Arc::new(AtomicBool::new(false)),
    };
    let disconnected = if view.mode == Mode::Long {
        GdbStub::new(stream)
            .run_blocking::<EventLoop<Long<'_, '_, '_>>>(&mut Long(&mut guest))
            .map_err(|err| err.to_string())
    } else {
        GdbStub::new(stream)
            .run_blocking::<EventLoop<I386<'_, '_, '_>>>(&mut I386(&mut guest))
            .map_err(|err| err.to_string())
    };
    let _ = guest
        .set_debug(false)
        .and_then(|()| stepper::set_single_step(guest.vcpu, false));
    if let Some(outcome) = guest.outcome.take() {
        return outcome.map(|()| GdbEnd::Halted);
    }
    let rip = guest.vcpu.get_regs().map_or(0, |r| r.rip);
    match disconnected {
        Ok(DisconnectReason::Disconnect) => {
            // Detached: the guest runs on, as without gdb.
            let labs = guest.view.labs;
            (labs.run_until_halt)(guest.vcpu, guest.console, guest.counts, &mut |_| {}).map(|()| GdbEnd::Halted)
        }
        Ok(DisconnectReason::Kill) => Ok(GdbEnd::Ended(format!(
            "gdb killed the guest at RIP {rip:#x}: the run did not finish (book: Debugging your guest)"
        ))),
        Ok(other) => Ok(GdbEnd::Ended(format!("gdb session ended ({other:?}) at RIP {rip:#x}"))),
        Err(err) => Ok(GdbEnd::Ended(format!(
            "the gdb connection failed at RIP {rip:#x}: {err} (book: Debugging your guest)"
        ))),
    }
}

/// The event loop of a target: the guest runs on this (the vCPU) thread while a watcher thread
/// waits for gdb's Ctrl-C on the connection and kicks the vCPU out of `KVM_RUN`.
struct EventLoop<T>(std::marker::PhantomData<T>);

impl Guest<'_, '_> {
    /// Runs the guest as gdb asked, watching the connection `fd` for a Ctrl-C meanwhile.
    fn run_watched(&mut self, fd: i32) -> Ran {
        let watchdog = self.watchdog;
        let done = AtomicBool::new(false);
        let interrupted = std::sync::Arc::clone(&self.interrupted);
        interrupted.store(false, Ordering::Release);
        std::thread::scope(|scope| {
            scope.spawn(|| watch_for_ctrl_c(fd, &done, &interrupted, watchdog));
            let ran = self.run_on();
            done.store(true, Ordering::Release);
            // The guest's output shows as gdb stops, not when a buffer fills.
            let _ = self.console.flush();
            ran
        })
    }
}

/// What the event loop does, for either width.
fn wait_for_stop<U>(
    guest: &mut Guest<'_, '_>,
    conn: &mut TcpStream,
) -> Result<
    run_blocking::Event<SingleThreadStopReason<U>>,
    run_blocking::WaitForStopReasonError<StubError, <TcpStream as Connection>::Error>,
> {
    match guest.run_watched(conn.as_raw_fd()) {
        Ran::Stopped(reason) => Ok(run_blocking::Event::TargetStopped(narrow(reason))),
        Ran::Interrupted => conn
            .read()
            .map(run_blocking::Event::IncomingData)
            .map_err(run_blocking::WaitForStopReasonError::Connection),
    }
}

/// A stop reason in the arch's address width (only `Watch` carries an address; none is used).
fn narrow<U>(reason: SingleThreadStopReason<u64>) -> SingleThreadStopReason<U> {
    match reason {
        SingleThreadStopReason::DoneStep => SingleThreadStopReason::DoneStep,
        SingleThreadStopReason::Exited(code) => SingleThreadStopReason::Exited(code),
        SingleThreadStopReason::Terminated(signal) => SingleThreadStopReason::Terminated(signal),
        SingleThreadStopReason::SwBreak(()) => SingleThreadStopReason::SwBreak(()),
        SingleThreadStopReason::HwBreak(()) => SingleThreadStopReason::HwBreak(()),
        _ => SingleThreadStopReason::Signal(Signal::SIGTRAP),
    }
}

/// Waits until gdb sends something (or `done`) and kicks the vCPU out of `KVM_RUN` then.
fn watch_for_ctrl_c(fd: i32, done: &AtomicBool, interrupted: &AtomicBool, watchdog: &Watchdog) {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    while !done.load(Ordering::Acquire) {
        // SAFETY: `poll` reads one valid pollfd; `fd` is the connection, which outlives this
        // thread (the scope ends before the event loop returns).
        let ready = unsafe { libc::poll(&mut poll, 1, WATCH_INTERVAL.as_millis() as libc::c_int) };
        if ready > 0 {
            if !done.load(Ordering::Acquire) {
                interrupted.store(true, Ordering::Release);
                watchdog.interrupt();
            }
            return;
        }
    }
}

/// The guest as a 64-bit x86 target (long mode).
struct Long<'t, 'a, 'g>(&'t mut Guest<'a, 'g>);
/// The guest as an i386 target (protected mode).
struct I386<'t, 'a, 'g>(&'t mut Guest<'a, 'g>);

/// The trait impls both targets share; `$usize` is the arch's address width.
macro_rules! shared_target {
    ($target:ident, $arch:ty, $usize:ty) => {
        impl<'t, 'a, 'g> BlockingEventLoop for EventLoop<$target<'t, 'a, 'g>> {
            type Target = $target<'t, 'a, 'g>;
            type Connection = TcpStream;
            type StopReason = SingleThreadStopReason<$usize>;

            fn wait_for_stop_reason(
                target: &mut Self::Target,
                conn: &mut TcpStream,
            ) -> Result<
                run_blocking::Event<Self::StopReason>,
                run_blocking::WaitForStopReasonError<StubError, <TcpStream as Connection>::Error>,
            > {
                wait_for_stop(target.0, conn)
            }

            fn on_interrupt(_target: &mut Self::Target) -> Result<Option<Self::StopReason>, StubError> {
                Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
            }
        }

        impl Target for $target<'_, '_, '_> {
            type Arch = $arch;
            type Error = StubError;

            fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
                BaseOps::SingleThread(self)
            }

            fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
                Some(self)
            }

            fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
                Some(self)
            }

            // `break` is served by the debug registers, never by writing int3 into memory.
            fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
                true
            }
        }

        impl SingleThreadResume for $target<'_, '_, '_> {
            fn resume(&mut self, _signal: Option<Signal>) -> Result<(), StubError> {
                self.0.resume = Resume::Continue;
                Ok(())
            }

            fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
                Some(self)
            }
        }

        impl SingleThreadSingleStep for $target<'_, '_, '_> {
            fn step(&mut self, _signal: Option<Signal>) -> Result<(), StubError> {
                self.0.resume = Resume::Step;
                Ok(())
            }
        }

        impl Breakpoints for $target<'_, '_, '_> {
            fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
                Some(self)
            }

            fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
                Some(self)
            }
        }

        impl SwBreakpoint for $target<'_, '_, '_> {
            fn add_sw_breakpoint(&mut self, addr: $usize, _kind: usize) -> TargetResult<bool, Self> {
                match self.0.add_breakpoint(addr.into(), BreakKind::Software) {
                    true => Ok(true),
                    false => Err(TargetError::NonFatal),
                }
            }

            fn remove_sw_breakpoint(&mut self, addr: $usize, _kind: usize) -> TargetResult<bool, Self> {
                Ok(self.0.slots.remove(addr.into(), BreakKind::Software))
            }
        }

        impl HwBreakpoint for $target<'_, '_, '_> {
            fn add_hw_breakpoint(&mut self, addr: $usize, _kind: usize) -> TargetResult<bool, Self> {
                match self.0.add_breakpoint(addr.into(), BreakKind::Hardware) {
                    true => Ok(true),
                    false => Err(TargetError::NonFatal),
                }
            }

            fn remove_hw_breakpoint(&mut self, addr: $usize, _kind: usize) -> TargetResult<bool, Self> {
                Ok(self.0.slots.remove(addr.into(), BreakKind::Hardware))
            }
        }

        impl MonitorCmd for $target<'_, '_, '_> {
            fn handle_monitor_cmd(&mut self, cmd: &[u8], out: ConsoleOutput<'_>) -> Result<(), StubError> {
                self.0.monitor(&String::from_utf8_lossy(cmd), out);
                Ok(())
            }
        }
    };
}

shared_target!(Long, X86_64_SSE, u64);
shared_target!(I386, X86_SSE, u32);

impl SingleThreadBase for Long<'_, '_, '_> {
    fn read_registers(&mut self, out: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let (r, s) = self.0.regs().map_err(TargetError::Fatal)?;
        out.regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ];
        out.rip = r.rip;
        out.eflags = r.rflags as u32;
        out.segments = Guest::segments(&s);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        let [
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            rsp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        ] = regs.regs;
        let new = kvm_regs {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            rsp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip: regs.rip,
            rflags: regs.eflags.into(),
        };
        self.0
            .vcpu
            .set_regs(&new)
            .map_err(|e| TargetError::Fatal(kvm_failed("KVM_SET_REGS")(e)))
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        Ok(self.0.read_virtual(start, data))
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        self.0
            .write_virtual(start, data)
            .then_some(())
            .ok_or(TargetError::NonFatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for I386<'_, '_, '_> {
    fn read_registers(&mut self, out: &mut X86CoreRegs) -> TargetResult<(), Self> {
        let (r, s) = self.0.regs().map_err(TargetError::Fatal)?;
        let low = |v: u64| v as u32;
        (out.eax, out.ecx, out.edx, out.ebx) = (low(r.rax), low(r.rcx), low(r.rdx), low(r.rbx));
        (out.esp, out.ebp, out.esi, out.edi) = (low(r.rsp), low(r.rbp), low(r.rsi), low(r.rdi));
        out.eip = low(r.rip);
        out.eflags = low(r.rflags);
        out.segments = Guest::segments(&s);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86CoreRegs) -> TargetResult<(), Self> {
        let new = kvm_regs {
            rax: regs.eax.into(),
            rbx: regs.ebx.into(),
            rcx: regs.ecx.into(),
            rdx: regs.edx.into(),
            rsi: regs.esi.into(),
            rdi: regs.edi.into(),
            rbp: regs.ebp.into(),
            rsp: regs.esp.into(),
            rip: regs.eip.into(),
            rflags: regs.eflags.into(),
            ..Default::default()
        };
        self.0
            .vcpu
            .set_regs(&new)
            .map_err(|e| TargetError::Fatal(kvm_failed("KVM_SET_REGS")(e)))
    }

    fn read_addrs(&mut self, start: u32, data: &mut [u8]) -> TargetResult<usize, Self> {
        Ok(self.0.read_virtual(start.into(), data))
    }

    fn write_addrs(&mut self, start: u32, data: &[u8]) -> TargetResult<(), Self> {
        self.0
            .write_virtual(start.into(), data)
            .then_some(())
            .ok_or(TargetError::NonFatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_slots_then_a_refusal_and_dr7_enables_the_used_ones() {
        let mut slots = Slots::default();
        assert!(slots.is_empty());
        for (i, addr) in [0x10, 0x20, 0x30].into_iter().enumerate() {
            assert!(slots.add(addr, BreakKind::Hardware), "slot {i}");
        }
        assert!(slots.add(0x40, BreakKind::Software));
        assert!(!slots.add(0x50, BreakKind::Hardware), "a fifth is refused");
        assert_eq!(slots.debugreg(), [0x10, 0x20, 0x30, 0x40, 0, 0, 0, 0b0101_0101]);
        assert!(slots.remove(0x20, BreakKind::Hardware));
        assert!(!slots.remove(0x20, BreakKind::Hardware), "already gone");
        assert_eq!(slots.debugreg()[7], 0b0101_0001);
        assert_eq!(slots.at(0x40), Some(BreakKind::Software));
        assert_eq!(slots.fired(0b1000), Some(BreakKind::Software));
        assert!(slots.add(0x50, BreakKind::Hardware), "a freed slot is used again");
        assert_eq!(slots.debugreg()[1], 0x50);
    }
}
