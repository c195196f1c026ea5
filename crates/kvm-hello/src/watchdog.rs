//! Stopping a vCPU from another thread, as production VMMs do: set `kvm_run.immediate_exit`
//! (so a `KVM_RUN` about to start returns at once) and signal the vCPU thread (so a `KVM_RUN`
//! under way returns with EINTR).

use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use kvm_ioctls::VcpuFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

/// The vCPU's `kvm_run.immediate_exit` byte.
struct ImmediateExit(*mut u8);

// SAFETY: the pointer is only written while `ARMED` holds it, and the vCPU thread takes it out
// (`disarm`) before the `kvm_run` mapping it points into is unmapped.
unsafe impl Send for ImmediateExit {}

/// The armed vCPU, if any: one vCPU per process.
static ARMED: Mutex<Option<ImmediateExit>> = Mutex::new(None);

extern "C" fn interrupt_kvm_run(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return with EINTR.
}

/// Installs the handler of the signal that interrupts `KVM_RUN` (its default would end the
/// process). Returns false when the signal cannot be used; `kick` then only sets immediate_exit.
pub fn install() -> bool {
    register_signal_handler(SIGRTMIN(), interrupt_kvm_run).is_ok()
}

/// Lets `kick` reach this vCPU. Call on the vCPU thread before the first `KVM_RUN`.
pub fn arm(vcpu: &mut VcpuFd) {
    let byte = &mut vcpu.get_kvm_run().immediate_exit as *mut u8;
    *ARMED.lock().unwrap_or_else(PoisonError::into_inner) = Some(ImmediateExit(byte));
}

/// Forgets the vCPU. Call on the vCPU thread before the vCPU is dropped.
pub fn disarm() {
    *ARMED.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Stops the armed vCPU's `KVM_RUN`, now and from now on.
pub fn kick<T>(vcpu_thread: &JoinHandle<T>, signal_installed: bool) {
    let armed = ARMED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ImmediateExit(byte)) = &*armed {
        // SAFETY: `byte` points into the vCPU's live kvm_run mapping: the vCPU thread disarms
        // (under this lock, which we hold) before that mapping goes away.
        unsafe { byte.write_volatile(1) };
        if signal_installed {
            // The thread may have ended already; nothing is left to interrupt then.
            let _ = vcpu_thread.kill(SIGRTMIN());
        }
    }
}
