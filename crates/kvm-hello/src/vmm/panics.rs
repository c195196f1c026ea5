//! Panic capture, per thread: the hook records a panic in the panicking thread's own slot, and
//! whoever catches the unwind on that thread takes it from there. Parallel runs (and the
//! grader's checks) each see their own panic; nothing is shared between threads.

use std::any::Any;
use std::cell::RefCell;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use kit_common::{LabPanic, Status};

/// Name of the threads that run lab code.
pub(crate) const VCPU_THREAD: &str = "vcpu0";

thread_local! {
    /// The last panic on this thread, recorded by the hook of `install_panic_hook`.
    static LAST_PANIC: RefCell<Option<LabPanic>> = const { RefCell::new(None) };
}

/// Replaces Rust's panic output: every panic is recorded for `take_last_panic` on its own
/// thread (a run reports the panics of its lab code itself), and, with `report_others`, a panic
/// outside lab code prints one line. Never panics itself, not even when stderr is closed.
pub fn install_panic_hook(report_others: bool) {
    panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("a panic without a message");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let panic = LabPanic::from_message(message, location.as_deref());
        if report_others && std::thread::current().name() != Some(VCPU_THREAD) {
            let _ = writeln!(std::io::stderr(), "kvm-hello: internal error: {panic}");
        }
        // A thread that is being torn down has no slot left: the panic is then only unwound.
        let _ = LAST_PANIC.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                *slot = Some(panic);
            }
        });
    }));
}

/// The last panic the hook of `install_panic_hook` recorded on the calling thread, if any.
pub fn take_last_panic() -> Option<LabPanic> {
    LAST_PANIC
        .try_with(|slot| slot.try_borrow_mut().ok()?.take())
        .ok()
        .flatten()
}

/// The status a lab panic ends a run with.
pub fn panic_status(panic: &LabPanic) -> Status {
    match panic {
        LabPanic::NotImplemented(_) => Status::NotImplemented,
        LabPanic::Other(_) => Status::LabPanicked,
    }
}

/// Runs `work` on the calling thread and returns its panic, if it panics: the one the hook
/// recorded (with its place), or else the payload's message.
pub(crate) fn capture<T>(work: impl FnOnce() -> T) -> Result<T, LabPanic> {
    let _ = take_last_panic(); // an older panic on this thread is not this one's
    panic::catch_unwind(AssertUnwindSafe(work))
        .map_err(|payload| take_last_panic().unwrap_or_else(|| of_payload(&*payload)))
}

/// A panic as its payload tells it (when no hook recorded it).
pub(crate) fn of_payload(payload: &(dyn Any + Send)) -> LabPanic {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    LabPanic::from_message(message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_takes_its_own_panic() {
        // Without the hook (installing it would change every test's panic output), from the payload.
        let other = std::thread::spawn(|| capture(|| panic!("on the other thread")).unwrap_err());
        let here = capture(|| panic!("on this thread")).unwrap_err();
        let there = other.join().unwrap();
        assert!(here.to_string().contains("on this thread"), "{here}");
        assert!(there.to_string().contains("on the other thread"), "{there}");
        let stub = capture(|| todo!("lab9 f")).unwrap_err();
        assert_eq!(stub, LabPanic::NotImplemented("lab9 f".into()));
        assert_eq!(capture(|| 7), Ok(7));
    }
}
