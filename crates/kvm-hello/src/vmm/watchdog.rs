//! One run's watchdog: it measures the vCPU thread's CPU time and stops the vCPU the way
//! Firecracker's vCPU kicker does. Everything lives in the run's own `Watchdog`; nothing is
//! shared between runs but the signal handler, which only touches the signalled thread's own
//! thread-local pointer.
//!
//! A stop (`Watchdog::stop`) is sticky: it is recorded first, and
//! - a vCPU armed later gets `immediate_exit` set while it is armed, so its first `KVM_RUN`
//!   returns EINTR at once;
//! - an armed vCPU's thread is sent the kick signal: a `KVM_RUN` under way returns EINTR, and
//!   the handler sets `immediate_exit` so the next one returns at once too;
//! - a lab function that starts after the stop is not called (`Watchdog::enter`).
//!
//! `immediate_exit` is written through the run's own mapping of the vCPU's `kvm_run` page
//! (`RunPage`), which the arm guard owns, so no write can outlive it, whatever lab code does with
//! its `VcpuFd`.

use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

/// Where `immediate_exit` sits in `kvm_run`: in its first page.
const IMMEDIATE_EXIT_OFFSET: usize = std::mem::offset_of!(kvm_bindings::kvm_run, immediate_exit);
/// The length of the run's own mapping of `kvm_run`: its first page holds `immediate_exit`.
const RUN_PAGE_LEN: usize = 4096;

/// Which limit ended a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The vCPU thread used `--timeout` of CPU time.
    Cpu,
    /// The vCPU thread did not run at all for `Limits::blocked` (it sleeps or waits).
    Blocked,
    /// The run lasted `Limits::ceiling` of wall-clock time.
    Wall,
}

/// How much a run may take: CPU time is the real limit; the two wall-clock limits only catch a
/// vCPU thread that does not use the CPU it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--timeout`: the vCPU thread's CPU time.
    pub budget: Duration,
    /// The longest the vCPU thread may go without running at all. A thread that waits for the
    /// CPU on a busy machine still runs now and then; a blocked one does not.
    pub blocked: Duration,
    /// The longest a run may last, whatever it does (a thread that sleeps a little, runs a
    /// little, forever).
    pub ceiling: Duration,
}

/// `Limits::blocked`, in multiples of `--timeout`.
pub const BLOCKED_FACTOR: u32 = 12;
/// `Limits::ceiling`, in multiples of `--timeout`.
pub const CEILING_FACTOR: u32 = 60;

impl Limits {
    /// The limits of a run with `--timeout timeout`.
    pub fn of_timeout(timeout: Duration) -> Limits {
        Limits {
            budget: timeout,
            blocked: timeout.saturating_mul(BLOCKED_FACTOR),
            ceiling: timeout.saturating_mul(CEILING_FACTOR),
        }
    }

    /// The limits of a run that waits for a person (`--gdb`): `--timeout` of CPU time still
    /// stops a spinning guest, but waiting is not a fault, so the wall-clock limits are off.
    pub fn interactive(timeout: Duration) -> Limits {
        Limits {
            budget: timeout,
            blocked: Duration::MAX,
            ceiling: Duration::MAX,
        }
    }
}

/// A lab function, as a timeout names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabFn {
    /// `lab1 vm_init`.
    pub name: &'static str,
    /// The chapter that explains it, `Lab 1, Guest memory and the vCPU`.
    pub book: &'static str,
    /// Whether it runs the guest (`KVM_RUN` returns EINTR there when the vCPU is stopped).
    pub runs_the_guest: bool,
}

/// Before the first lab function.
const STARTING: LabFn = LabFn {
    name: "kvm-hello (before the first lab function)",
    book: "Troubleshooting",
    runs_the_guest: false,
};

/// What a stop recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The limit that was reached.
    pub limit: Limit,
    /// The run's limits.
    pub limits: Limits,
    /// The vCPU thread's CPU time when it was stopped.
    pub cpu: Duration,
    /// Wall-clock time since the run started.
    pub wall: Duration,
    /// The lab function that was running.
    pub running: LabFn,
}

/// What the watchdog knows, behind one lock (never taken in the signal handler).
#[derive(Debug)]
struct State {
    stop: Option<Stop>,
    running: LabFn,
    /// The vCPU thread's CPU clock, while that thread runs the session.
    cpu_clock: Option<libc::clockid_t>,
    /// The armed vCPU's thread, while it is inside `Armed`'s scope.
    armed_thread: Option<libc::pthread_t>,
}

/// One run's watchdog, shared by the vCPU thread and the thread that waits for it.
#[derive(Debug)]
pub struct Watchdog {
    state: Mutex<State>,
    /// Whether the kick signal has a handler (without one, a stop still sets `immediate_exit`
    /// when the vCPU is armed, but cannot interrupt a `KVM_RUN` under way).
    signal_installed: bool,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog::new()
    }
}

impl Watchdog {
    /// A watchdog for a run that has not started (installs the kick signal's handler once per
    /// process).
    pub fn new() -> Watchdog {
        Watchdog {
            state: Mutex::new(State {
                stop: None,
                running: STARTING,
                cpu_clock: None,
                armed_thread: None,
            }),
            signal_installed: install_kick_handler(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic: every update is one assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `function` is about to run on the vCPU thread; refuses once the run was
    /// stopped, so that no lab function starts after a timeout.
    pub fn enter(&self, function: LabFn) -> Result<(), Box<Stop>> {
        let mut state = self.state();
        match state.stop {
            Some(stop) => Err(Box::new(stop)),
            None => {
                state.running = function;
                Ok(())
            }
        }
    }

    /// Makes the calling thread's CPU time the run's budget until the guard is dropped.
    pub fn measure_this_thread(&self) -> CpuClockGuard<'_> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `pthread_self` is the calling thread, alive during the call; `clock` is a valid
        // place for the answer.
        let found = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0;
        self.state().cpu_clock = found.then_some(clock);
        CpuClockGuard { watchdog: self }
    }

    /// The vCPU thread's CPU time so far (None before it starts measuring and after it ends).
    pub fn cpu_time(&self) -> Option<Duration> {
        let state = self.state();
        // Read under the lock: the thread's guard clears the clock (under the lock) before the
        // thread ends, so this never reads the clock of a thread that is gone.
        cpu_time_of(state.cpu_clock?)
    }

    /// Stops the run: sticky (see the module's comment). Returns the stop, or the earlier one.
    pub fn stop(&self, limit: Limit, limits: Limits, wall: Duration) -> Stop {
        let mut state = self.state();
        if let Some(stop) = state.stop {
            return stop;
        }
        let cpu = state.cpu_clock.and_then(cpu_time_of).unwrap_or_default();
        let stop = Stop {
            limit,
            limits,
            cpu,
            wall,
            running: state.running,
        };
        state.stop = Some(stop);
        if let (Some(thread), true) = (state.armed_thread, self.signal_installed) {
            // SAFETY: `armed_thread` is set only while its thread is inside an `Armed` scope, and
            // that scope's guard clears it under this lock (which we hold) before the thread can
            // end, so the thread is alive. The signal has a handler (`signal_installed`).
            // The result is ignored: there is nothing more to do if it cannot be delivered.
            let _ = unsafe { libc::pthread_kill(thread, SIGRTMIN()) };
        }
        stop
    }

    /// Interrupts the armed vCPU's `KVM_RUN` (it returns EINTR) without stopping the run: gdb's
    /// Ctrl-C. The kick handler also sets `immediate_exit`, which the interrupted side clears
    /// before it runs the guest again. Returns whether a vCPU was armed to be kicked.
    pub fn interrupt(&self) -> bool {
        let state = self.state();
        match (state.armed_thread, self.signal_installed) {
            (Some(thread), true) => {
                // SAFETY: as in `stop`: the armed thread is alive while we hold the lock, and
                // the signal has a handler.
                unsafe { libc::pthread_kill(thread, SIGRTMIN()) == 0 }
            }
            _ => false,
        }
    }

    /// The stop, if the run was stopped.
    pub fn stopped(&self) -> Option<Stop> {
        self.state().stop
    }

    /// Arms the kick for the vCPU `vcpu` on the calling thread (the one that will call
    /// `KVM_RUN`) until the guard is dropped. A stop that came earlier takes effect at once.
    pub fn arm(&self, vcpu: &impl AsRawFd) -> io::Result<Armed<'_>> {
        let page = RunPage::map(vcpu)?;
        let mut state = self.state();
        KICK_TARGET.with(|target| target.store(page.immediate_exit().as_ptr(), Ordering::Release));
        // SAFETY: `pthread_self` has no preconditions.
        state.armed_thread = Some(unsafe { libc::pthread_self() });
        if state.stop.is_some() {
            page.request_immediate_exit();
        }
        Ok(Armed {
            watchdog: self,
            page: Some(page),
            on_this_thread: PhantomData,
        })
    }
}

/// The vCPU thread's CPU clock is the run's budget while this lives.
#[derive(Debug)]
pub struct CpuClockGuard<'a> {
    watchdog: &'a Watchdog,
}

impl Drop for CpuClockGuard<'_> {
    fn drop(&mut self) {
        self.watchdog.state().cpu_clock = None;
    }
}

/// An armed vCPU: while this lives, a stop kicks it. Dropped on every path (also when lab code
/// panics), on the thread that armed it (it is not `Send`).
#[derive(Debug)]
pub struct Armed<'a> {
    watchdog: &'a Watchdog,
    page: Option<RunPage>,
    on_this_thread: PhantomData<*const ()>,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut state = self.watchdog.state();
        state.armed_thread = None;
        // The handler runs on this thread: once the pointer is null it cannot reach the page,
        // so the page may go. The fence keeps the compiler from moving the unmap before it.
        // (`try_with`: a drop must not panic; without the slot, the handler cannot reach it either.)
        let _ = KICK_TARGET.try_with(|target| target.store(ptr::null_mut(), Ordering::Release));
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        drop(self.page.take());
    }
}

/// The run's own shared mapping of the first page of a vCPU's `kvm_run`.
#[derive(Debug)]
struct RunPage {
    base: NonNull<u8>,
}

impl RunPage {
    fn map(vcpu: &impl AsRawFd) -> io::Result<RunPage> {
        // SAFETY: a new shared mapping of the vCPU fd's page 0 (its kvm_run, as kvm-ioctls maps
        // it) at an address the kernel picks: it replaces nothing. The mapping keeps the vCPU's
        // file alive on its own, so it stays valid until `munmap` in `drop`.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                RUN_PAGE_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(base.cast::<u8>())
            .map(|base| RunPage { base })
            .ok_or_else(|| io::Error::other("mmap of kvm_run returned address 0"))
    }

    fn immediate_exit(&self) -> NonNull<u8> {
        // SAFETY: the offset is inside the first page of kvm_run, which this mapping spans.
        unsafe { self.base.add(IMMEDIATE_EXIT_OFFSET) }
    }

    /// Sets `immediate_exit`: the next `KVM_RUN` returns EINTR at once.
    fn request_immediate_exit(&self) {
        set_immediate_exit(self.immediate_exit().as_ptr());
    }
}

impl Drop for RunPage {
    fn drop(&mut self) {
        // SAFETY: `base` is this mapping of RUN_PAGE_LEN bytes, unmapped only here; the kick
        // target no longer points into it (`Armed::drop` clears it first). Nothing to do if it fails.
        let _ = unsafe { libc::munmap(self.base.as_ptr().cast(), RUN_PAGE_LEN) };
    }
}

/// Writes 1 to an `immediate_exit` byte. Async-signal-safe (one atomic store).
fn set_immediate_exit(byte: *mut u8) {
    // SAFETY: callers pass the byte of a live `RunPage` (see `Armed::drop` for the handler's
    // case). The byte is only ever written by this function, atomically (the kernel reads it
    // with READ_ONCE); Release orders the stop recorded before it.
    unsafe { AtomicU8::from_ptr(byte) }.store(1, Ordering::Release);
}

thread_local! {
    /// The `immediate_exit` byte of the vCPU armed on this thread, or null: what the kick
    /// handler sets. Const-initialised without a destructor, so reading it in a signal handler
    /// is a plain thread-local load.
    static KICK_TARGET: AtomicPtr<u8> = const { AtomicPtr::new(ptr::null_mut()) };
}

/// The kick signal's handler: sets the armed vCPU's `immediate_exit`, so that a `KVM_RUN` that
/// was not under way when the signal came returns at once too. Async-signal-safe: a
/// thread-local load and an atomic store, no lock, no allocation.
extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = KICK_TARGET.try_with(|target| {
        let byte = target.load(Ordering::Acquire);
        if !byte.is_null() {
            set_immediate_exit(byte);
        }
    });
}

/// Installs `on_kick` for the kick signal, once per process. Returns whether it is installed.
fn install_kick_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| register_signal_handler(SIGRTMIN(), on_kick).is_ok())
}

/// The CPU time of a thread's clock.
fn cpu_time_of(clock: libc::clockid_t) -> Option<Duration> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the answer; an unknown clock is an error, not UB.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_records_the_running_function_and_sticks() {
        let watchdog = Watchdog::new();
        let f = LabFn {
            name: "lab2 translate",
            book: "Lab 2, Page tables",
            runs_the_guest: false,
        };
        watchdog.enter(f).unwrap();
        let limits = Limits::of_timeout(Duration::from_secs(1));
        let stop = watchdog.stop(Limit::Cpu, limits, Duration::from_secs(1));
        assert_eq!(stop.running, f);
        assert_eq!(watchdog.stopped(), Some(stop));
        assert_eq!(
            watchdog.enter(STARTING),
            Err(Box::new(stop)),
            "no lab function starts after a stop"
        );
        let again = watchdog.stop(Limit::Wall, limits, Duration::from_secs(60));
        assert_eq!(again.limit, Limit::Cpu, "the first stop stands");
    }

    #[test]
    fn the_cpu_clock_is_this_threads_while_measured() {
        let watchdog = Watchdog::new();
        assert_eq!(watchdog.cpu_time(), None);
        let guard = watchdog.measure_this_thread();
        let before = watchdog.cpu_time().expect("the thread's CPU clock");
        let mut x = 0u64;
        while watchdog.cpu_time().unwrap() < before + Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        drop(guard);
        assert_eq!(watchdog.cpu_time(), None);
    }

    #[test]
    fn a_stop_before_arming_makes_the_first_kvm_run_return_eintr() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs read/write access to /dev/kvm");
        let vm = kvm.create_vm().unwrap();
        let mut vcpu = vm.create_vcpu(0).unwrap();
        let watchdog = Watchdog::new();
        let second = Duration::from_secs(1);
        watchdog.stop(Limit::Cpu, Limits::of_timeout(second), second);
        let armed = watchdog.arm(&vcpu).unwrap();
        let err = vcpu.run().expect_err("KVM_RUN is refused at once");
        assert_eq!(err.errno(), libc::EINTR, "{err}");
        drop(armed);
        assert_eq!(
            vcpu.get_kvm_run().immediate_exit,
            1,
            "set through the run's own mapping"
        );
    }
}
