//! The jail through the real bwrap: a jailed Python (Debian's /usr/bin/python3) tries what lab
//! code hostile to the grader would, and what a VMM needs.
//!
//! These tests need a working bubblewrap, and some need read/write access to /dev/kvm: where
//! either is missing they fail with one line that says so.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kit_jail::{Jail, JailBuilder};

const PYTHON: &str = "/usr/bin/python3";

/// The jail, or a failed test that says why this host cannot jail.
fn jail() -> Jail {
    Jail::detect()
        .unwrap_or_else(|err| panic!("this test runs programs jailed and needs bubblewrap working here: {err}"))
}

/// Fails the calling test with a clear message when /dev/kvm cannot be used.
fn require_kvm() {
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!("this test creates a VM in the jail and needs read/write access to /dev/kvm ({err})");
    }
}

fn require_python() {
    assert!(
        Path::new(PYTHON).exists(),
        "this test runs {PYTHON} (Debian's python3) in the jail; install python3"
    );
}

/// A fresh directory under the target directory.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kit-jail").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// Runs `script` in the jailed Python, with `configure` adding to the jail; returns its output.
fn python(jail: &Jail, script: &str, configure: impl FnOnce(JailBuilder<'_>) -> JailBuilder<'_>) -> Output {
    require_python();
    let builder = configure(jail.command(PYTHON).args(["-c", script]));
    let mut command = builder.build().expect("build the jailed command");
    command.stdin(Stdio::null()).output().expect("run bwrap")
}

/// The jailed script's stdout, after asserting it exited 0.
fn ok_stdout(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the jailed script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// A `sleep` outside the jail, killed when dropped.
struct Outside(std::process::Child);

impl Outside {
    fn sleep() -> Outside {
        Outside(
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("start sleep outside the jail"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("wait on sleep").is_none()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_jail_sees_only_its_own_processes() {
    let jail = jail();
    let outside = Outside::sleep();
    let script = r#"
import os
for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):
    print(pid, open(f'/proc/{pid}/comm').read().strip())
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b));
    let seen: Vec<(u32, String)> = stdout
        .lines()
        .map(|line| {
            let (pid, comm) = line.split_once(' ').expect("pid and comm");
            (pid.parse().expect("a pid"), comm.to_owned())
        })
        .collect();
    assert!(
        seen.iter().any(|(_, comm)| comm == "python3"),
        "the jail sees itself: {seen:?}"
    );
    for (pid, comm) in &seen {
        assert!(
            comm == "python3" || comm == "bwrap",
            "the jail sees a process outside it: {pid} {comm}"
        );
        assert_ne!(*pid, outside.pid(), "the jail sees the outside sleep's pid");
    }
}

#[test]
fn the_jail_cannot_signal_a_process_outside() {
    let jail = jail();
    let mut outside = Outside::sleep();
    // The pid namespace: the outside pid names no process in the jail (ESRCH), and kill(-1)
    // reaches only the jail's own processes.
    let script = format!(
        r#"
import os, signal
try:
    os.kill({pid}, signal.SIGKILL)
    print('killed')
except ProcessLookupError:
    print('no such process')
try:
    os.kill(-1, signal.SIGKILL)
except ProcessLookupError:
    pass
print('alive')
"#,
        pid = outside.pid()
    );
    let stdout = ok_stdout(&python(&jail, &script, |b| b));
    assert_eq!(stdout, "no such process\nalive\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(outside.alive(), "the sleep outside the jail was killed from inside it");
}

/// Calls that would succeed for an unjailed process: ptrace(PTRACE_TRACEME), process_vm_readv
/// and process_vm_writev of its own memory, kcmp of its own files, unshare(CLONE_NEWUTS) (EPERM
/// from the kernel too, so it is checked for EPERM only), and the attach to its own child.
const MEMORY_CALLS: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_ptrace = 310, 311, 312, 101
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
L = ctypes.c_long
def result(ret):
    return 'ok' if ret >= 0 else os.strerror(ctypes.get_errno())
src, dst = ctypes.create_string_buffer(b'secret', 8), ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(dst), 8), iovec(ctypes.addressof(src), 8)
pid = os.getpid()
print('process_vm_readv', result(libc.syscall(L(SYS_process_vm_readv), L(pid), ctypes.byref(local), L(1), ctypes.byref(remote), L(1), L(0))))
print('process_vm_writev', result(libc.syscall(L(SYS_process_vm_writev), L(pid), ctypes.byref(remote), L(1), ctypes.byref(local), L(1), L(0))))
print('kcmp', result(libc.syscall(L(SYS_kcmp), L(pid), L(pid), L(0), L(1), L(1))))
child = os.fork()
if child == 0:
    time.sleep(5)
    os._exit(0)
print('ptrace attach', result(libc.syscall(L(SYS_ptrace), L(16), L(child), L(0), L(0))))
os.kill(child, 9)
os.waitpid(child, 0)
print('ptrace traceme', result(libc.syscall(L(SYS_ptrace), L(0), L(0), L(0), L(0))))
"#;

#[test]
fn the_jail_cannot_ptrace_or_reach_process_memory() {
    let jail = jail();
    let stdout = ok_stdout(&python(&jail, MEMORY_CALLS, |b| b));
    let refused = "Operation not permitted";
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "ptrace attach",
        "ptrace traceme",
    ] {
        assert!(
            stdout.lines().any(|line| line == format!("{call} {refused}")),
            "{call} was not refused:\n{stdout}"
        );
    }
}

#[test]
fn the_same_calls_work_outside_the_jail() {
    // The control of the test above: its EPERMs come from the jail, not from this host.
    require_python();
    let output = Command::new(PYTHON)
        .args(["-c", MEMORY_CALLS])
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    let stdout = ok_stdout(&output);
    for call in [
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "ptrace attach",
        "ptrace traceme",
    ] {
        assert!(
            stdout.lines().any(|line| line == format!("{call} ok")),
            "{call} failed unjailed:\n{stdout}"
        );
    }
}

#[test]
fn the_filter_refuses_the_kernel_surface_a_vmm_does_not_need() {
    let jail = jail();
    // Each with arguments an unjailed root would get past the kernel's own checks of the
    // number (EINVAL, EFAULT...) at least: only the filter answers EPERM to all of them.
    let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
calls = {'io_uring_setup': 425, 'userfaultfd': 323, 'bpf': 321, 'perf_event_open': 298,
         'keyctl': 250, 'unshare': 272, 'setns': 308, 'pidfd_getfd': 438, 'mount': 165,
         'umount2': 166, 'pivot_root': 155, 'add_key': 248, 'request_key': 249,
         'io_uring_enter': 426, 'io_uring_register': 427}
for name, nr in calls.items():
    L = ctypes.c_long
    ret = libc.syscall(L(nr), L(0), L(0), L(0), L(0), L(0), L(0))
    print(name, 'ok' if ret >= 0 else os.strerror(ctypes.get_errno()))
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 15, "{stdout}");
    for line in lines {
        assert!(line.ends_with("Operation not permitted"), "not refused: {line}");
    }
}

#[test]
fn the_jail_cannot_write_read_only_paths_or_see_host_files() {
    let jail = jail();
    let exposed = fresh_dir("read-only");
    std::fs::write(exposed.join("kept"), "original").expect("write a file");
    let hidden = fresh_dir("hidden");
    std::fs::write(hidden.join("gradebook"), "grades").expect("write a file");
    let script = format!(
        r#"
import os
def attempt(what, action):
    try:
        action()
        print(what, 'ok')
    except OSError as err:
        print(what, os.strerror(err.errno))
attempt('overwrite', lambda: open('{exposed}/kept', 'w').write('forged'))
attempt('create', lambda: open('{exposed}/new', 'w'))
attempt('usr', lambda: open('/usr/planted', 'w'))
attempt('unlink', lambda: os.unlink('{exposed}/kept'))
attempt('root', lambda: open('/planted', 'w'))
attempt('etc', lambda: open('/etc/planted', 'w'))
attempt('read hidden', lambda: open('{hidden}/gradebook').read())
attempt('write hidden', lambda: open('{hidden}/gradebook', 'w').write('119'))
"#,
        exposed = exposed.display(),
        hidden = hidden.display()
    );
    let stdout = ok_stdout(&python(&jail, &script, |b| b.read_only(&exposed)));
    let read_only = "Read-only file system";
    let expected = [
        format!("overwrite {read_only}"),
        format!("create {read_only}"),
        format!("usr {read_only}"),
        format!("unlink {read_only}"),
        format!("root {read_only}"),
        format!("etc {read_only}"),
        "read hidden No such file or directory".to_owned(),
        "write hidden No such file or directory".to_owned(),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    assert_eq!(std::fs::read_to_string(exposed.join("kept")).unwrap(), "original");
    assert!(!exposed.join("new").exists());
    assert_eq!(std::fs::read_to_string(hidden.join("gradebook")).unwrap(), "grades");
}

#[test]
fn the_jail_has_no_network() {
    let jail = jail();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen outside the jail");
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        r#"
import os, socket
print(sorted(name for _, name in socket.if_nameindex()))
for address in [('127.0.0.1', {port}), ('1.1.1.1', 80)]:
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(address)
        print('connected')
    except OSError as err:
        print(os.strerror(err.errno) if err.errno else 'failed')
"#
    );
    let stdout = ok_stdout(&python(&jail, &script, |b| b));
    assert_eq!(stdout, "['lo']\nConnection refused\nNetwork is unreachable\n");
}

#[test]
fn the_jail_has_no_terminal() {
    let jail = jail();
    let script = r#"
import os
try:
    os.open('/dev/tty', os.O_RDWR)
    print('tty opened')
except OSError as err:
    print('tty', os.strerror(err.errno))
print('pts', sorted(p for p in os.listdir('/dev/pts') if p.isdigit()))
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b));
    assert_eq!(stdout, "tty No such device or address\npts []\n");
}

#[test]
fn the_jail_writes_its_scratch_dir_and_forks_children() {
    let jail = jail();
    let scratch = fresh_dir("scratch");
    let script = r#"
import os, signal, subprocess, threading, time, ctypes
open('written', 'w').write('from the jail')
child = os.fork()
if child == 0:
    os._exit(7)
print('fork', os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
print('exec', subprocess.run(['/bin/sh', '-c', 'exit 3']).returncode)
done = []
thread = threading.Thread(target=lambda: done.append(1))
thread.start(); thread.join()
print('thread', len(done))
# A POSIX timer's signal, as lab 6 uses: timer_create with the default SIGALRM, then settime.
fired = []
signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
librt = ctypes.CDLL(None, use_errno=True)
timer = ctypes.c_void_p()
assert librt.timer_create(1, None, ctypes.byref(timer)) == 0, os.strerror(ctypes.get_errno())
spec = (ctypes.c_long * 4)(0, 0, 0, 10_000_000)
assert librt.timer_settime(timer, 0, ctypes.byref(spec), None) == 0, os.strerror(ctypes.get_errno())
deadline = time.time() + 5
while not fired and time.time() < deadline:
    time.sleep(0.01)
print('timer', len(fired))
print('cwd', os.getcwd() == os.environ['HOME'])
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b.scratch(&scratch)));
    assert_eq!(stdout, "fork 7\nexec 3\nthread 1\ntimer 1\ncwd True\n");
    assert_eq!(
        std::fs::read_to_string(scratch.join("written")).unwrap(),
        "from the jail"
    );
}

#[test]
fn the_jail_creates_a_vm_through_dev_kvm() {
    let jail = jail();
    require_kvm();
    let script = r#"
import fcntl, mmap, os
KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE, KVM_CREATE_VCPU = 0xAE00, 0xAE01, 0xAE04, 0xAE41
kvm = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
print('api', fcntl.ioctl(kvm, KVM_GET_API_VERSION, 0))
vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0))
print('vm', vm > 2, 'vcpu', vcpu > 2, 'run', len(run) >= 4096)
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b.kvm(true)));
    assert_eq!(stdout, "api 12\nvm True vcpu True run True\n");
}

#[test]
fn the_jail_has_no_dev_kvm_unless_asked() {
    let jail = jail();
    let script = "import os; print(os.path.exists('/dev/kvm'))";
    assert_eq!(ok_stdout(&python(&jail, script, |b| b)), "False\n");
}

/// A pipe whose write end the caller's `pre_exec` puts on descriptor 3, as the grader's runner
/// does with its result pipe.
fn with_result_pipe(mut command: Command) -> (Command, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two fresh descriptors, checked before use.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors that nothing else owns.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let write_fd = write.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; `write` outlives the spawn (moved in).
    unsafe {
        command.pre_exec(move || {
            let fd = write.as_raw_fd();
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _ = write_fd;
    (command, read)
}

#[test]
fn descriptor_3_reaches_the_jailed_program_and_the_filter_descriptor_does_not() {
    let jail = jail();
    let script = r#"
import os
os.write(3, b'through fd 3')
open_fds = []
for fd in range(4, 256):
    try:
        os.fstat(fd)
        open_fds.append(os.readlink(f'/proc/self/fd/{fd}'))
    except OSError:
        pass
print('other descriptors', open_fds)
"#;
    require_python();
    let command = jail.command(PYTHON).args(["-c", script]).build().expect("build");
    let (mut command, read) = with_result_pipe(command);
    let output = command.stdin(Stdio::null()).output().expect("run bwrap");
    drop(command);
    let stdout = ok_stdout(&output);
    // Descriptors this test inherited without close-on-exec pass too; the filter's must not.
    assert!(stdout.starts_with("other descriptors ["), "{stdout}");
    assert!(
        !stdout.contains("kit-jail-seccomp"),
        "the jailed program holds the filter's memfd: {stdout}"
    );
    let mut received = String::new();
    std::fs::File::from(read)
        .read_to_string(&mut received)
        .expect("read the pipe");
    assert_eq!(received, "through fd 3");
}

#[test]
fn a_command_can_be_spawned_twice() {
    // The filter's memfd is rewound in each child: the second bwrap reads the whole program.
    let jail = jail();
    let mut command = jail.command("true").build().expect("build");
    for _ in 0..2 {
        assert!(command.stdin(Stdio::null()).status().expect("run bwrap").success());
    }
}

#[test]
fn a_missing_bwrap_names_the_package() {
    let err = Jail::with_bwrap("/nonexistent/bwrap").expect_err("no jail without bwrap");
    assert!(err.fix.contains("apt-get install bubblewrap"), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn a_bwrap_that_cannot_jail_is_reported_with_what_it_said() {
    let dir = fresh_dir("fake-bwrap");
    let fake = dir.join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = Jail::with_bwrap(&fake).expect_err("a failing bwrap is no jail");
    assert!(err.reason.contains("No permissions to create new namespace"), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn a_program_outside_the_jails_view_is_refused_when_built() {
    let jail = jail();
    let dir = fresh_dir("not-exposed");
    std::fs::copy("/usr/bin/true", dir.join("probe")).expect("copy a program");
    let err = jail
        .command(dir.join("probe"))
        .build()
        .expect_err("a program the jail cannot see");
    assert!(err.to_string().contains("not under /usr"), "{err}");
}

/// What the grader's runner does to the child it starts (grader/src/sandbox.rs `limit_child`):
/// its own process group, a parent-death signal, and RLIMIT_AS, RLIMIT_NPROC and RLIMIT_CPU.
fn with_runner_limits(mut command: Command) -> Command {
    const MAX_ADDRESS_SPACE: u64 = 4 << 30;
    let nproc = 4096 + 256;
    // SAFETY: prctl and setrlimit are async-signal-safe and change this child only.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            for (resource, limit) in [
                (libc::RLIMIT_AS, MAX_ADDRESS_SPACE),
                (libc::RLIMIT_NPROC, nproc),
                (libc::RLIMIT_CPU, 12),
                (libc::RLIMIT_CORE, 0),
            ] {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(resource, &rlimit) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.process_group(0);
    command
}

#[test]
fn a_vm_is_created_under_the_runners_limits_and_reports_on_fd_3() {
    // As the grader will run its probe: the request on stdin, the answer on descriptor 3.
    let jail = jail();
    require_kvm();
    require_python();
    let script = r#"
import fcntl, os, sys
kvm = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
vm = fcntl.ioctl(kvm, 0xAE01, 0)
child = os.fork()
if child == 0:
    os._exit(0 if fcntl.ioctl(os.open('/dev/kvm', os.O_RDWR), 0xAE01, 0) > 2 else 1)
ok = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
request = sys.stdin.read()
os.write(3, (request + ': vm in parent and child' if vm > 2 and ok else 'no vm').encode())
"#;
    let command = jail
        .command(PYTHON)
        .args(["-c", script])
        .kvm(true)
        .build()
        .expect("build");
    let (command, read) = with_result_pipe(command);
    let mut command = with_runner_limits(command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bwrap");
    drop(command);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"check\": 1}")
        .expect("write the request");
    let output = child.wait_with_output().expect("wait for bwrap");
    ok_stdout(&output);
    let mut received = String::new();
    std::fs::File::from(read)
        .read_to_string(&mut received)
        .expect("read the pipe");
    assert_eq!(received, "{\"check\": 1}: vm in parent and child");
}

#[test]
fn killing_bwrap_ends_every_process_in_the_jail() {
    // What a runner that stops a check does first: the jailed processes are in another session
    // (--new-session) and pid namespace, and still end with the bwrap they run under.
    let jail = jail();
    let scratch = fresh_dir("killed");
    let script = r#"
import os, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
open('started', 'w').write(str(os.getpid()))
time.sleep(60)
"#;
    require_python();
    let mut command = jail
        .command(PYTHON)
        .args(["-c", script])
        .scratch(&scratch)
        .build()
        .expect("build");
    let mut child = command.stdin(Stdio::null()).spawn().expect("run bwrap");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !scratch.join("started").exists() {
        assert!(std::time::Instant::now() < deadline, "the jailed script did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let jailed = processes_under(child.id());
    assert!(jailed.len() >= 5, "bwrap, its init, python and 3 children: {jailed:?}");
    child.kill().expect("kill bwrap");
    child.wait().expect("reap bwrap");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left: Vec<u32> = jailed.iter().copied().filter(|pid| is_live(*pid)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jailed processes outlived bwrap: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `pid` and its descendants, from the host's /proc.
fn processes_under(pid: u32) -> Vec<u32> {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut tree = vec![pid];
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !tree.contains(&p) && parent_of(p).is_some_and(|parent| tree.contains(&parent)) {
                tree.push(p);
                grew = true;
            }
        }
    }
    tree
}

/// Whether `pid` runs (a zombie has ended).
fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn the_jail_cannot_leave_a_set_id_file_on_the_host() {
    // Its files in the scratch directory belong to the uid that started bwrap (root, when the
    // grader runs as root): a set-user-ID one would run as that user for whoever executes it.
    let jail = jail();
    let scratch = fresh_dir("set-id");
    let script = r#"
import os, stat
def attempt(what, action):
    try:
        action()
        print(what, 'ok')
    except OSError as err:
        print(what, os.strerror(err.errno))
open('plain', 'w').write('#!/bin/sh\n')
attempt('chmod 755', lambda: os.chmod('plain', 0o755))
attempt('chmod 4755', lambda: os.chmod('plain', 0o4755))
attempt('chmod 2755', lambda: os.chmod('plain', 0o2755))
attempt('fchmod 4755', lambda: os.fchmod(os.open('plain', os.O_RDONLY), 0o4755))
attempt('create 644', lambda: os.close(os.open('created', os.O_CREAT | os.O_WRONLY, 0o644)))
attempt('create 4755', lambda: os.close(os.open('setuid', os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt('mknod 4755', lambda: os.mknod('node', stat.S_IFREG | 0o4755))
attempt('open 4755 without O_CREAT', lambda: os.close(os.open('plain', os.O_RDONLY, 0o4755)))
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b.scratch(&scratch)));
    let refused = "Operation not permitted";
    let expected = [
        "chmod 755 ok".to_owned(),
        format!("chmod 4755 {refused}"),
        format!("chmod 2755 {refused}"),
        format!("fchmod 4755 {refused}"),
        "create 644 ok".to_owned(),
        format!("create 4755 {refused}"),
        format!("mknod 4755 {refused}"),
        "open 4755 without O_CREAT ok".to_owned(),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    for entry in std::fs::read_dir(&scratch).unwrap() {
        let entry = entry.unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&entry.metadata().unwrap().permissions());
        assert_eq!(mode & 0o6000, 0, "{} is set-id on the host", entry.path().display());
    }
}

#[test]
fn nested_paths_keep_their_own_access() {
    // The grader exposes its build directory read-only and may put the scratch directory inside
    // it, or a read-only file inside the scratch directory.
    let jail = jail();
    let outer = fresh_dir("nested");
    let scratch = outer.join("scratch");
    let inner = scratch.join("inputs");
    std::fs::create_dir_all(&inner).unwrap();
    let script = r#"
import os
def attempt(what, path):
    try:
        open(path, 'w').write('x')
        print(what, 'ok')
    except OSError as err:
        print(what, os.strerror(err.errno))
attempt('outer', '../outer-file')
attempt('scratch', 'scratch-file')
attempt('inner', 'inputs/inner-file')
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| {
        b.read_only(&inner).scratch(&scratch).read_only(&outer)
    }));
    assert_eq!(
        stdout,
        "outer Read-only file system\nscratch ok\ninner Read-only file system\n"
    );
}

#[test]
fn the_jail_cannot_write_the_kernels_knobs() {
    // Sysctls check only the writer's uid: as root's uid on the host (a grader run as root) the
    // jail could set kernel.core_pattern for the whole host, were /proc not read-only.
    let jail = jail();
    let script = r#"
import os
# Each written back with what it holds, should the jail fail.
for path in ['/proc/sys/kernel/core_pattern', '/proc/sys/kernel/hostname', '/proc/sys/kernel/domainname',
             '/proc/self/oom_score_adj']:
    try:
        with open(path, 'r+') as knob:
            knob.write(knob.read())
        print(path, 'written')
    except OSError as err:
        print(path, os.strerror(err.errno))
print('sys', os.path.exists('/sys/kernel'))
"#;
    let stdout = ok_stdout(&python(&jail, script, |b| b));
    for line in stdout.lines().take(4) {
        assert!(
            line.ends_with("Read-only file system"),
            "the jail could write a kernel knob: {line}"
        );
    }
    assert!(stdout.ends_with("sys False\n"), "{stdout}");
}
