//! The slice timer and the thread's CPU clock: given code of lab 6 (you use them, you do not
//! write them). A POSIX timer on this thread's CPU clock sends `slice_signal()` to this thread
//! alone; its handler sets the vCPU's `immediate_exit`, so the slice ends whether the signal lands
//! inside `KVM_RUN` (EINTR) or between two of them.

use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::Lab6Error;

/// The CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`): guest time is measured
/// with it, so a busy machine slows a run down without changing its shares.
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the answer; the clock exists on every Linux.
    let _ = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or_default(),
        u32::try_from(now.tv_nsec).unwrap_or_default(),
    )
}

// ANCHOR: slice_timer
/// The slice timer (given): a POSIX timer on this thread's CPU clock whose signal, sent to this
/// thread only (`SIGEV_THREAD_ID`), ends the running slice. The signal interrupts a `KVM_RUN`
/// under way (it returns EINTR); its handler also sets the armed vCPU's `immediate_exit`, so a
/// signal that comes while the host handles an exit still ends the slice at the next `KVM_RUN`.
///
/// `arm` before the slice's first `KVM_RUN`, `disarm` when it ends (disarming clears
/// `immediate_exit` again). It belongs to the thread that created it.
#[derive(Debug)]
pub struct SliceTimer {
    timer: libc::timer_t,
    page: Option<RunPage>,
    on_this_thread: PhantomData<*const ()>,
}
// ANCHOR_END: slice_timer

/// The slice timer's signal: the one after the watchdog's kick (`SIGRTMIN`).
pub fn slice_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

impl SliceTimer {
    /// A disarmed timer for the calling thread.
    pub fn new() -> Result<SliceTimer, Lab6Error> {
        if !install_slice_handler() {
            return Err(Lab6Error::Timer(io::Error::other(
                "cannot install the slice signal's handler",
            )));
        }
        // SAFETY: an all-zero sigevent is a valid value of this plain C struct; the fields that
        // matter are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = slice_signal();
        // SAFETY: `gettid` has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; the timer is deleted in `drop`.
        if unsafe { libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut event, &mut timer) } != 0 {
            return Err(Lab6Error::Timer(io::Error::last_os_error()));
        }
        Ok(SliceTimer {
            timer,
            page: None,
            on_this_thread: PhantomData,
        })
    }

    /// Starts a slice of `length` of this thread's CPU time for `vcpu`.
    pub fn arm(&mut self, vcpu: &VcpuFd, length: Duration) -> Result<(), Lab6Error> {
        let page = RunPage::map(vcpu).map_err(Lab6Error::Timer)?;
        SLICE_TARGET.with(|target| target.store(page.immediate_exit().as_ptr(), Ordering::Release));
        // The old page (if `disarm` was skipped) goes only after the target moved off it.
        self.page = Some(page);
        // A zero it_value would disarm the timer: the shortest slice is one nanosecond.
        self.set(length.max(Duration::from_nanos(1)))
    }

    /// Ends the slice: stops the timer and clears the vCPU's `immediate_exit`.
    pub fn disarm(&mut self) -> Result<(), Lab6Error> {
        let stopped = self.set(Duration::ZERO);
        // The handler runs on this thread: once the target is null it cannot reach the page.
        let _ = SLICE_TARGET.try_with(|target| target.store(ptr::null_mut(), Ordering::Release));
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if let Some(page) = self.page.take() {
            page.clear_immediate_exit();
        }
        stopped
    }

    fn set(&self, value: Duration) -> Result<(), Lab6Error> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(value.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(value.subsec_nanos()),
            },
        };
        // SAFETY: `self.timer` is this timer, alive until `drop`; `spec` is valid for the call.
        if unsafe { libc::timer_settime(self.timer, 0, &spec, ptr::null_mut()) } != 0 {
            return Err(Lab6Error::Timer(io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for SliceTimer {
    fn drop(&mut self) {
        let _ = self.disarm();
        // SAFETY: `self.timer` was created by `timer_create` and is deleted only here.
        let _ = unsafe { libc::timer_delete(self.timer) };
    }
}

/// A mapping of the first page of a vCPU's `kvm_run` of the timer's own, for `immediate_exit`.
#[derive(Debug)]
struct RunPage {
    base: NonNull<u8>,
}

/// The first page of `kvm_run` holds `immediate_exit`.
const RUN_PAGE_LEN: usize = 4096;
const IMMEDIATE_EXIT_OFFSET: usize = std::mem::offset_of!(kvm_bindings::kvm_run, immediate_exit);

impl RunPage {
    fn map(vcpu: &VcpuFd) -> io::Result<RunPage> {
        // SAFETY: a new shared mapping of the vCPU fd's page 0 (its kvm_run) at an address the
        // kernel picks: it replaces nothing, and keeps the vCPU's file alive until `munmap`.
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

    fn clear_immediate_exit(&self) {
        // SAFETY: the byte lies in this live mapping; it is only written atomically.
        unsafe { AtomicU8::from_ptr(self.immediate_exit().as_ptr()) }.store(0, Ordering::Release);
    }
}

impl Drop for RunPage {
    fn drop(&mut self) {
        // SAFETY: `base` is this mapping of RUN_PAGE_LEN bytes, unmapped only here; the slice
        // target never points into a page that is dropped (`arm` moves it first, `disarm` clears it).
        let _ = unsafe { libc::munmap(self.base.as_ptr().cast(), RUN_PAGE_LEN) };
    }
}

thread_local! {
    /// The `immediate_exit` byte of the vCPU whose slice runs on this thread, or null.
    static SLICE_TARGET: AtomicPtr<u8> = const { AtomicPtr::new(ptr::null_mut()) };
}

/// The slice signal's handler: sets the running vCPU's `immediate_exit`. Async-signal-safe (a
/// thread-local load and an atomic store).
extern "C" fn on_slice_end(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = SLICE_TARGET.try_with(|target| {
        let byte = target.load(Ordering::Acquire);
        if !byte.is_null() {
            // SAFETY: the target points into the live page of the armed `SliceTimer` (see `arm`
            // and `disarm`, which run on this same thread).
            unsafe { AtomicU8::from_ptr(byte) }.store(1, Ordering::Release);
        }
    });
}

/// Installs `on_slice_end` once per process; returns whether it is installed.
fn install_slice_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| vmm_sys_util::signal::register_signal_handler(slice_signal(), on_slice_end).is_ok())
}
