//! The seccomp filter of the jailed program: a deny list (EPERM, not a kill) of the system calls
//! that reach other processes' memory, the kernel's attack surface, or the mount and namespace
//! setup bwrap has made; everything else (KVM's ioctls, mmap, threads, signals, timers, fork and
//! exec, pipes, prctl) is allowed, so a Rust VMM runs unchanged.
//!
//! It also refuses to make set-user-ID and set-group-ID files (see `set_id_rules`).
//!
//! `kill`, `tgkill`, `pidfd_open` and friends are allowed: the jail's pid namespace already keeps
//! them inside (a process outside has no pid in the jail, so no call can name it), and a VMM
//! signals its own vCPU threads (lab 6's POSIX timer signal).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

/// System calls refused with EPERM whatever their arguments.
const REFUSED: &[(&str, libc::c_long)] = &[
    // Other processes' memory and descriptors.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    // The mount namespace bwrap built stays as it is.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // No new namespaces and no way into another one.
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    // Kernel attack surface a VMM has no use for.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
];

/// Terminal ioctls that push input into a terminal or read its screen (the jail also has no
/// controlling terminal: bwrap's `--new-session`).
const REFUSED_IOCTLS: &[libc::Ioctl] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// `clone` flags that make a namespace (clone3's flags are in memory, out of a filter's reach:
/// bwrap's `--disable-userns` and the dropped capabilities refuse those).
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The names of the system calls the filter refuses whatever their arguments (for docs and tests).
pub fn refused_syscalls() -> impl Iterator<Item = &'static str> {
    REFUSED.iter().map(|(name, _)| *name)
}

/// The filter, compiled to a classic BPF program in bwrap's `--seccomp` format: `struct
/// sock_filter` after `struct sock_filter`, in native byte order.
pub(crate) fn program_bytes() -> Result<Vec<u8>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    let rule = |arg, op, value| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
            .and_then(|condition| SeccompRule::new(vec![condition]))
            .map_err(|err| format!("seccomp rule: {err}"))
    };
    let ioctls = REFUSED_IOCTLS.iter().map(|&request| {
        SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
            .and_then(|condition| SeccompRule::new(vec![condition]))
            .map_err(|err| format!("seccomp rule: {err}"))
    });
    rules.insert(libc::SYS_ioctl, ioctls.collect::<Result<_, _>>()?);
    let clones = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| rule(0, SeccompCmpOp::MaskedEq(flag as u64), flag as u64));
    rules.insert(libc::SYS_clone, clones.collect::<Result<_, _>>()?);
    for (nr, syscall_rules) in set_id_rules()? {
        rules.insert(nr, syscall_rules);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|err| format!("seccomp: {err}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|err| format!("seccomp filter: {err}"))?;
    let compiled: BpfProgram = filter.try_into().map_err(|err| format!("seccomp filter: {err}"))?;
    let mut program = x32_guard();
    program.extend(compiled);
    Ok(program.iter().flat_map(to_bytes).collect())
}

/// The mode bits that make an executable run as its owner or group.
const SET_ID_BITS: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];

/// Where each call that sets a file's mode takes it: (call, index of the mode, index of the
/// open flags when the mode counts only with `O_CREAT` or `O_TMPFILE`).
#[cfg(target_arch = "x86_64")]
const MODE_SETTERS: &[(libc::c_long, u8, Option<u8>)] = &[
    (libc::SYS_chmod, 1, None),
    (libc::SYS_fchmod, 1, None),
    (libc::SYS_fchmodat, 2, None),
    (libc::SYS_fchmodat2, 2, None),
    (libc::SYS_creat, 1, None),
    (libc::SYS_mknod, 1, None),
    (libc::SYS_mknodat, 2, None),
    (libc::SYS_open, 2, Some(1)),
    (libc::SYS_openat, 3, Some(2)),
];

/// Refuses a set-user-ID or set-group-ID bit on any file: the scratch directory is on the
/// host, and the jail's files there belong to the uid that started bwrap (root, when the grader
/// runs as root), so such a file would run as that user for whoever executes it on the host.
/// `openat2` takes its mode in memory, out of a filter's reach: it is refused whole (EPERM;
/// libraries fall back to `openat`).
#[cfg(target_arch = "x86_64")]
fn set_id_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, String> {
    let condition = |arg, mask: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(mask), mask)
            .map_err(|err| format!("seccomp condition: {err}"))
    };
    let mut all = vec![(libc::SYS_openat2, Vec::new())];
    for &(nr, mode_arg, flags_arg) in MODE_SETTERS {
        let mut syscall_rules = Vec::new();
        for bit in SET_ID_BITS {
            let creating: Vec<Option<u64>> = match flags_arg {
                None => vec![None],
                Some(_) => vec![Some(libc::O_CREAT as u64), Some(libc::O_TMPFILE as u64)],
            };
            for flag in creating {
                let mut conditions = vec![condition(mode_arg, bit)?];
                if let (Some(flags_arg), Some(flag)) = (flags_arg, flag) {
                    conditions.push(condition(flags_arg, flag)?);
                }
                syscall_rules.push(SeccompRule::new(conditions).map_err(|err| format!("seccomp rule: {err}"))?);
            }
        }
        all.push((nr, syscall_rules));
    }
    Ok(all)
}

#[cfg(not(target_arch = "x86_64"))]
fn set_id_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, String> {
    Err("kit-jail's filter knows x86_64's system calls only".to_owned())
}

/// On x86_64, x32 system calls (numbers with bit 30 set) carry the same audit arch as 64-bit
/// ones and would slip past a filter keyed on 64-bit numbers: they are refused first (ENOSYS).
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    vec![
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: NR_OFFSET,
        },
        sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
    ]
}

fn to_bytes(instruction: &sock_filter) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[0..2].copy_from_slice(&instruction.code.to_ne_bytes());
    bytes[2] = instruction.jt;
    bytes[3] = instruction.jf;
    bytes[4..8].copy_from_slice(&instruction.k.to_ne_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_compiles_to_whole_instructions() {
        let bytes = program_bytes().expect("the filter compiles");
        assert_eq!(bytes.len() % 8, 0);
        assert!(bytes.len() / 8 > REFUSED.len(), "one test per refused call at least");
    }
}
