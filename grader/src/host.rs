//! What this host can run: a usable /dev/kvm, and 32-bit paging (which PVM refuses).

use std::path::Path;

use crate::HostNeed;

/// The KVM API version every KVM has reported since Linux 2.6.22.
const KVM_API_VERSION: i32 = 12;
/// Present on hosts whose KVM is PVM (KVM without hardware virtualisation).
const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// What the host offers the checks.
#[derive(Debug, Clone)]
pub struct Host {
    /// `Err(reason)` when no VM can be created here.
    pub kvm: Result<(), String>,
    /// Whether KVM is PVM, which runs paging only in long mode.
    pub pvm: bool,
}

impl Host {
    /// Looks at this host: opens /dev/kvm, asks its API version and creates a VM.
    pub fn probe() -> Host {
        Host {
            kvm: probe_kvm(),
            pvm: Path::new(PVM_MODULE).exists(),
        }
    }

    /// Why a check that needs `need` cannot run here, with the fix; `None` when it can.
    pub fn cannot_run(&self, need: HostNeed) -> Option<String> {
        if need == HostNeed::Nothing {
            return None;
        }
        if let Err(reason) = &self.kvm {
            return Some(format!(
                "this host has no usable KVM ({reason}); the check needs /dev/kvm: grade on Linux with KVM and read/write access to /dev/kvm (book: Troubleshooting)"
            ));
        }
        if need == HostNeed::Paged32 && self.pvm {
            return Some(
                "this host's KVM is PVM, which refuses 32-bit paging (the guest ends in KVM_EXIT_SHUTDOWN); the check runs on VMX or SVM hosts (book: Troubleshooting)"
                    .to_owned(),
            );
        }
        None
    }
}

fn probe_kvm() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|err| format!("cannot open /dev/kvm for reading and writing: {err}"))?;
    let kvm = kvm_ioctls::Kvm::new().map_err(|err| format!("cannot open /dev/kvm: {err}"))?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(format!(
            "/dev/kvm answers KVM_GET_API_VERSION with {version}, not {KVM_API_VERSION}: it is not a KVM device"
        ));
    }
    kvm.create_vm()
        .map(drop)
        .map_err(|err| format!("KVM_CREATE_VM fails: {err}"))
}
