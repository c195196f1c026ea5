//! Runs a program jailed: [bubblewrap](https://github.com/containers/bubblewrap) (`bwrap`,
//! Debian's `bubblewrap`, the sandbox under Flatpak) in its own user, pid, mount, ipc, uts, net
//! and cgroup namespaces, with a minimal read-only root, one writable scratch directory,
//! `/dev/kvm` when asked, an unprivileged uid, no capabilities, no terminal, and a seccomp
//! filter built with [`seccompiler`] (Firecracker's).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let jail = kit_jail::Jail::detect()?;
//! let mut command = jail
//!     .command("/work/target/release/grader-probe")
//!     .read_only("/work/target/release")
//!     .scratch("/tmp/probe-scratch")
//!     .kvm(true)
//!     .build()?;
//! let status = command.status()?;
//! # Ok(()) }
//! ```
//!
//! # Descriptors: the contract with the caller
//!
//! bwrap passes every descriptor it inherits without `FD_CLOEXEC` to the jailed program, under the
//! same number: descriptors 0, 1, 2 and whatever the caller's own `pre_exec` places (the grader's
//! runner `dup2`s its result pipe onto 3) reach the jailed program unchanged.
//!
//! The seccomp program travels to bwrap in a memfd that the built [`Command`] owns (it closes
//! with the `Command`). The memfd sits at descriptor [`FIRST_JAIL_FD`] or above, `FD_CLOEXEC` in
//! the caller; the `Command`'s own `pre_exec` clears `FD_CLOEXEC` in the forked child only (and
//! rewinds it, so the `Command` may be spawned again). bwrap reads it and closes it before it
//! starts the jailed program, which never holds it. So the caller:
//! - may add `pre_exec` closures before or after (they run in the order added), and `dup2` onto
//!   any descriptor below [`FIRST_JAIL_FD`];
//! - must not close or `dup2` onto descriptors at [`FIRST_JAIL_FD`] or above in its `pre_exec`;
//! - must spawn the `Command` from one thread at a time (the memfd's offset is shared).
//!
//! Environment: bwrap clears it (`--clearenv`): the jailed program gets `PATH`, `HOME` (its
//! scratch directory, or `/tmp`) and what [`JailBuilder::env`] adds, not the `Command`'s.
//!
//! # Processes
//!
//! The outer bwrap stays in the caller's process group; the jailed program leaves it
//! (`--new-session` makes it a new session, so it has no controlling terminal and no
//! `TIOCSTI`): a caller that stops the jail by process group reaches only bwrap. Every process
//! of the jail keeps its host pid in the caller's cgroup and process tree (bwrap, the jail's init
//! under it, the program under that). Killing the outer bwrap kills the jail's init
//! (`--die-with-parent`), and the kernel then kills everything in the jail's pid namespace.
//! RLIMITs set by the caller's `pre_exec` apply to bwrap and everything it starts.
//!
//! # Identity
//!
//! Inside, the program runs as uid/gid [`JAIL_UID`]/[`JAIL_GID`] with no capabilities (bwrap's
//! `--cap-drop ALL`, bounding set empty) and cannot make user namespaces (`--disable-userns`).
//! Outside, that uid is the uid of the process that started bwrap: an unprivileged grader's uid,
//! or **uid 0 when the grader runs as root** (CI does). The user namespace maps one uid only and
//! the jail holds no capability, so as "root outside" it reaches what root owns only through the
//! owner's permission bits: that is how it opens `/dev/kvm` (`root:root 0600` on the measurement
//! host). Everything else is kept from it: every path it sees is read-only except its scratch
//! directory, `/tmp`, `/dev/shm` and `/dev/kvm`; its `/proc` shows only its own processes and is
//! read-only (sysctls check nothing but the writer's uid: `kernel.core_pattern` would otherwise
//! be the host's to rewrite); it has no network and cannot name a process outside (pid
//! namespace). Its files in the scratch directory are that uid's on the host: the filter refuses
//! set-user-ID and set-group-ID bits, and the caller keeps the scratch directory inside a
//! directory only it can enter (0700) and removes it after the run. To run the jail under an
//! unprivileged uid outside as well, start the grader as that user and give the user read/write
//! access to `/dev/kvm` (Debian: the `kvm` group).
//!
//! # Cost
//!
//! About 10 to 12 ms per jailed start on a PVM guest with 2 vCPUs (Linux 6.18, bubblewrap 0.8.0,
//! load average 6 to 8): `/usr/bin/true` 0.75 ms unjailed, 12.9 ms jailed (medians of 300);
//! the release `kvm-hello` hello-world 8.0 ms and 17.3 ms (medians of 100). The crate's README
//! has the method (`examples/jail-cost.rs`) and all the runs.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

mod seccomp;

pub use seccomp::refused_syscalls;

/// The uid the jailed program runs as inside the jail.
pub const JAIL_UID: u32 = 1000;
/// The gid the jailed program runs as inside the jail.
pub const JAIL_GID: u32 = 1000;
/// The jail's own descriptors in the caller's child are at this number or above; the caller's
/// `pre_exec` may place descriptors for the jailed program below it.
pub const FIRST_JAIL_FD: RawFd = 10;
/// `PATH` inside the jail.
pub const JAIL_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where bwrap is looked for when `PATH` has none.
const DEFAULT_BWRAP: &str = "/usr/bin/bwrap";
/// Top-level host paths the jail's root is made of (merged /usr: symlinks are recreated as
/// symlinks, directories bound read-only).
const ROOT_PATHS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// Files of /etc the dynamic loader and a shell need (bound read-only where they exist).
const ETC_PATHS: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
];

/// Why this host cannot jail: a one-line reason and its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// What is missing or refused.
    pub reason: String,
    /// What fixes it.
    pub fix: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot jail lab code: {} (fix: {})", self.reason, self.fix)
    }
}

impl std::error::Error for Unavailable {}

/// Why a jailed command could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// A path to expose, the scratch directory or the program does not exist or is not usable.
    Path(PathBuf, String),
    /// `/dev/kvm` was asked for and this host has none.
    NoKvm,
    /// The memfd for the seccomp program could not be made.
    Seccomp(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Path(path, why) => write!(f, "cannot jail with {}: {why}", path.display()),
            BuildError::NoKvm => write!(f, "the jail needs /dev/kvm and this host has none"),
            BuildError::Seccomp(err) => write!(f, "cannot hand the seccomp filter to bwrap: {err}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// A bwrap that works on this host, and the compiled seccomp filter.
#[derive(Clone)]
pub struct Jail {
    bwrap: PathBuf,
    seccomp: Arc<[u8]>,
}

impl fmt::Debug for Jail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jail")
            .field("bwrap", &self.bwrap)
            .field("seccomp_instructions", &(self.seccomp.len() / 8))
            .finish()
    }
}

impl Jail {
    /// Finds bwrap and proves that it can jail here by running `true` in a jail once (about a
    /// millisecond or two; callers keep the `Jail`).
    pub fn detect() -> Result<Jail, Unavailable> {
        let bwrap = find_bwrap().ok_or_else(|| Unavailable {
            reason: "bubblewrap (bwrap) is not installed".to_owned(),
            fix: "install bubblewrap (apt-get install bubblewrap)".to_owned(),
        })?;
        Jail::with_bwrap(bwrap)
    }

    /// [`Jail::detect`] with the bwrap at `bwrap`.
    pub fn with_bwrap(bwrap: impl Into<PathBuf>) -> Result<Jail, Unavailable> {
        let bwrap = bwrap.into();
        let seccomp = seccomp::program_bytes().map_err(|err| Unavailable {
            reason: err,
            fix: "report this: the seccomp filter does not compile for this architecture".to_owned(),
        })?;
        let jail = Jail {
            bwrap,
            seccomp: seccomp.into(),
        };
        jail.prove()?;
        Ok(jail)
    }

    /// The bwrap this jail runs.
    pub fn bwrap(&self) -> &Path {
        &self.bwrap
    }

    /// Starts building a jailed command that runs `program` (an absolute path inside the jail's
    /// view, or a name looked up in [`JAIL_PATH`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> JailBuilder<'_> {
        JailBuilder {
            jail: self,
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            read_only: Vec::new(),
            scratch: None,
            kvm: false,
            env: Vec::new(),
        }
    }

    /// Runs `true` jailed, as every command is, and turns a failure into its cause.
    fn prove(&self) -> Result<(), Unavailable> {
        let mut command = self.command("true").build().map_err(|err| Unavailable {
            reason: err.to_string(),
            fix: "check that /usr is readable and memfd_create works".to_owned(),
        })?;
        let output = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let output = output.map_err(|err| Unavailable {
            reason: format!("cannot run {}: {err}", self.bwrap.display()),
            fix: "install bubblewrap (apt-get install bubblewrap)".to_owned(),
        })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = stderr
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        Err(diagnose(&said, output.status))
    }
}

/// Names the cause of a failed trial jail from what bwrap said and what the host's settings show.
fn diagnose(said: &str, status: std::process::ExitStatus) -> Unavailable {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    let bwrap_said = if said.is_empty() {
        format!("bwrap exited with {status}")
    } else {
        format!("bwrap: {said}")
    };
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Unavailable {
            reason: format!("unprivileged user namespaces are disabled ({bwrap_said})"),
            fix: "sysctl kernel.unprivileged_userns_clone=1".to_owned(),
        };
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Unavailable {
            reason: format!("user namespaces are disabled ({bwrap_said})"),
            fix: "sysctl user.max_user_namespaces=15000".to_owned(),
        };
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Unavailable {
            reason: format!("AppArmor restricts unprivileged user namespaces ({bwrap_said})"),
            fix: "allow bwrap an AppArmor profile with `userns,` or sysctl \
                  kernel.apparmor_restrict_unprivileged_userns=0"
                .to_owned(),
        };
    }
    Unavailable {
        reason: format!("bubblewrap cannot start a jail here ({bwrap_said})"),
        fix: "run bwrap by hand with the same arguments to see why (containers often refuse \
              namespaces: run the grader on the host or a VM)"
            .to_owned(),
    }
}

/// bwrap on `PATH`, else Debian's.
fn find_bwrap() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("bwrap"));
    on_path
        .chain([PathBuf::from(DEFAULT_BWRAP)])
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// What one jailed command is made of: see [`Jail::command`].
#[derive(Debug)]
pub struct JailBuilder<'a> {
    jail: &'a Jail,
    program: OsString,
    args: Vec<OsString>,
    read_only: Vec<PathBuf>,
    scratch: Option<PathBuf>,
    kvm: bool,
    env: Vec<(OsString, OsString)>,
}

impl JailBuilder<'_> {
    /// Adds an argument of the jailed program.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments of the jailed program.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Exposes a host file or directory read-only, at the same path inside.
    pub fn read_only(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_only.push(path.into());
        self
    }

    /// The one directory the jailed program may write, at the same path inside; it is also its
    /// working directory and `HOME`. Without one, nothing is writable but a private `/tmp`.
    pub fn scratch(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch = Some(dir.into());
        self
    }

    /// Whether the jailed program gets `/dev/kvm` (read/write).
    pub fn kvm(mut self, needed: bool) -> Self {
        self.kvm = needed;
        self
    }

    /// Sets an environment variable of the jailed program (its environment is otherwise only
    /// `PATH` and `HOME`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The `Command` that runs bwrap with the jail's arguments; see the crate's docs for the
    /// descriptor contract. stdin, stdout and stderr are the caller's to set.
    pub fn build(self) -> Result<Command, BuildError> {
        let absolute = |path: &Path| -> Result<PathBuf, BuildError> {
            let canonical = path
                .canonicalize()
                .map_err(|err| BuildError::Path(path.to_owned(), err.to_string()))?;
            Ok(canonical)
        };
        let read_only = self
            .read_only
            .iter()
            .map(|path| absolute(path))
            .collect::<Result<Vec<_>, _>>()?;
        let scratch = match &self.scratch {
            Some(dir) => {
                let dir = absolute(dir)?;
                if !dir.is_dir() {
                    return Err(BuildError::Path(
                        dir,
                        "the scratch directory is not a directory".to_owned(),
                    ));
                }
                Some(dir)
            }
            None => None,
        };
        if self.kvm && !Path::new("/dev/kvm").exists() {
            return Err(BuildError::NoKvm);
        }
        // An absolute program must be in the jail's view (symbolic links resolved; it runs under
        // the name given, which is its argv[0]); a bare name is looked up in JAIL_PATH.
        if Path::new(&self.program).is_absolute() {
            let program = absolute(Path::new(&self.program))?;
            let inside = program.starts_with("/usr")
                || read_only
                    .iter()
                    .chain(scratch.iter())
                    .any(|dir| program.starts_with(dir));
            if !inside {
                return Err(BuildError::Path(
                    program,
                    "the program is not under /usr, a read-only path or the scratch directory".to_owned(),
                ));
            }
        }
        let seccomp = seccomp_memfd(&self.jail.seccomp).map_err(BuildError::Seccomp)?;

        let mut command = Command::new(&self.jail.bwrap);
        command.args(["--unshare-all", "--unshare-user", "--disable-userns"]);
        command.args(["--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
        command
            .arg("--uid")
            .arg(JAIL_UID.to_string())
            .arg("--gid")
            .arg(JAIL_GID.to_string());
        command.args(["--hostname", "jail"]);
        for path in ROOT_PATHS {
            let path = Path::new(path);
            match std::fs::read_link(path) {
                Ok(target) => {
                    command.arg("--symlink").arg(target).arg(path);
                }
                Err(_) if path.is_dir() => {
                    command.arg("--ro-bind").arg(path).arg(path);
                }
                Err(_) => {}
            }
        }
        for path in ETC_PATHS {
            command.arg("--ro-bind-try").arg(path).arg(path);
        }
        // A fresh procfs, read-only: when the grader runs as root the jailed uid is root on the
        // host, and sysctls (/proc/sys) check only the writer's uid (bwrap does not cover them
        // when their directory looks read-only to it).
        command.args(["--proc", "/proc", "--remount-ro", "/proc"]);
        command.args(["--dev", "/dev", "--tmpfs", "/tmp"]);
        if self.kvm {
            command.args(["--dev-bind", "/dev/kvm", "/dev/kvm"]);
        }
        // bwrap mounts in order: a directory before what lies inside it, so a scratch directory
        // inside a read-only path stays writable and a read-only path inside it stays read-only.
        let mut binds: Vec<(&Path, &str)> = read_only.iter().map(|path| (path.as_path(), "--ro-bind")).collect();
        binds.extend(scratch.iter().map(|dir| (dir.as_path(), "--bind")));
        binds.sort_by_key(|(path, _)| path.components().count());
        for (path, kind) in binds {
            command.arg(kind).arg(path).arg(path);
        }
        // The root bwrap built (a tmpfs holding the mount points) is read-only too: the scratch
        // directory, /tmp and /dev/shm are all the jail can write.
        command.args(["--remount-ro", "/"]);
        let home = match &scratch {
            Some(dir) => {
                command.arg("--chdir").arg(dir);
                dir.as_os_str().to_owned()
            }
            None => {
                command.args(["--chdir", "/tmp"]);
                OsString::from("/tmp")
            }
        };
        command
            .args(["--clearenv", "--setenv", "PATH", JAIL_PATH])
            .arg("--setenv")
            .arg("HOME")
            .arg(home);
        for (key, value) in &self.env {
            command.arg("--setenv").arg(key).arg(value);
        }
        command.arg("--seccomp").arg(seccomp.as_raw_fd().to_string());
        command.arg("--").arg(&self.program).args(&self.args);

        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe calls
        // (fcntl, lseek) on the memfd, which the closure owns and so keeps open.
        unsafe {
            command.pre_exec(move || {
                let fd = seccomp.as_raw_fd();
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 || libc::lseek(fd, 0, libc::SEEK_SET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(command)
    }
}

/// A memfd holding `program`, close-on-exec, at [`FIRST_JAIL_FD`] or above.
fn seccomp_memfd(program: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked before use.
    let raw = unsafe { libc::memfd_create(c"kit-jail-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let low = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the result is checked before use.
    let high = unsafe { libc::fcntl(low.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_JAIL_FD) };
    if high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `high` is a fresh descriptor that nothing else owns.
    let high = unsafe { OwnedFd::from_raw_fd(high) };
    drop(low);
    let mut file = std::fs::File::from(high);
    file.write_all(program)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seccomp_memfd_is_above_the_callers_descriptors() {
        let fd = seccomp_memfd(b"12345678").expect("memfd");
        assert!(fd.as_raw_fd() >= FIRST_JAIL_FD);
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC,
            "close-on-exec in the caller"
        );
    }
}
