//! Containment of a check's processes: a child subreaper keeps every process the check starts
//! (even one that leaves its process group or session) among the grader's descendants; a pids
//! cgroup, where one can be made, caps how many it may start and lists them exactly; resource
//! limits cap memory; the CPU time of the whole tree is summed from /proc.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// How many processes and threads a check may have at once (where a pids cgroup can be made).
pub const MAX_TASKS: u64 = 128;
/// The niceness of a check's processes: a fork loop or a busy loop of lab code must not starve
/// the grader, which watches and stops it.
pub const CHECK_NICENESS: i32 = 10;
/// The address space of each of a check's processes (KVM, its threads and lab code fit well).
pub const MAX_ADDRESS_SPACE: u64 = 4 << 30;
/// Processes the grader's user may start while a check runs, over the number running before
/// (RLIMIT_NPROC; not enforced for root, where the cgroup does the job).
pub const EXTRA_PROCESSES: u64 = 256;

/// One process as /proc shows it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    start: u64,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Proc {
        pid,
        ppid: field(4)? as i32,
        state: rest.chars().next()?,
        cpu_ticks: field(14)? + field(15)?,
        start: field(22)?,
    })
}

fn all_procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Makes this process a child subreaper: orphans of its descendants are reparented to it, not
/// to init, so a check's escaped processes can still be found and killed.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER changes a flag of this process only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// A pids cgroup for one check (v2 where delegated, else v1's pids hierarchy).
#[derive(Debug)]
pub struct Cgroup(PathBuf);

impl Cgroup {
    /// A new cgroup for the next check, where one can be made here.
    pub fn prepare() -> Option<Cgroup> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Cgroup::create(&format!("kvm-lab-grader-{}-{n}", std::process::id()))
    }

    /// The path a process writes "0" to, to join the cgroup (done between fork and exec, so the
    /// check's process is inside before it runs anything).
    pub fn procs_path(&self) -> std::ffi::CString {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(self.0.join("cgroup.procs").as_os_str().as_bytes()).unwrap_or_default()
    }

    fn create(name: &str) -> Option<Cgroup> {
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
        let parent = if v2 { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/pids" };
        let dir = PathBuf::from(parent).join(name);
        std::fs::create_dir(&dir).ok()?;
        let cgroup = Cgroup(dir);
        std::fs::write(cgroup.0.join("pids.max"), MAX_TASKS.to_string()).ok()?;
        Some(cgroup)
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The processes of one running check.
#[derive(Debug)]
pub struct Sandbox {
    /// The check's own process.
    leader: i32,
    /// The leader's start time: processes of the check start no earlier.
    leader_start: u64,
    cgroup: Option<Cgroup>,
    /// Every process seen in the check, with the CPU ticks it had used when last seen.
    seen: HashMap<(i32, u64), u64>,
    ticks_per_second: u64,
}

impl Sandbox {
    /// Takes charge of `leader`, a child of this process that has not run lab code yet, and of
    /// `cgroup` when the leader joined it.
    pub fn new(leader: u32, cgroup: Option<Cgroup>) -> Sandbox {
        let cgroup = cgroup.filter(|c| c.pids().contains(&(leader as i32)));
        Sandbox {
            leader: leader as i32,
            leader_start: read_proc(leader as i32).map(|p| p.start).unwrap_or_default(),
            cgroup,
            seen: HashMap::new(),
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    /// The check's live processes: the cgroup's members, or else this process's descendants
    /// that started with or after the check (orphans come back to us as subreaper).
    fn members(&self) -> Vec<Proc> {
        if let Some(cgroup) = &self.cgroup {
            return cgroup.pids().into_iter().filter_map(read_proc).collect();
        }
        let procs = all_procs();
        let me = std::process::id() as i32;
        let mut tree: HashSet<i32> = HashSet::from([me]);
        let mut grew = true;
        while grew {
            grew = false;
            for p in &procs {
                if !tree.contains(&p.pid) && tree.contains(&p.ppid) {
                    tree.insert(p.pid);
                    grew = true;
                }
            }
        }
        procs
            .into_iter()
            .filter(|p| p.pid != me && tree.contains(&p.pid) && (p.pid == self.leader || p.start >= self.leader_start))
            .collect()
    }

    /// CPU time used by the check and everything it started, so far.
    pub fn cpu_time(&mut self) -> Duration {
        for p in self.members() {
            self.seen.insert((p.pid, p.start), p.cpu_ticks);
        }
        let ticks: u64 = self.seen.values().sum();
        Duration::from_millis(ticks * 1000 / self.ticks_per_second)
    }

    /// Sends `signal` to every process of the check.
    pub fn signal(&self, signal: i32) {
        for p in self.members() {
            // SAFETY: kill(2) only sends a signal; the pid is one of the check's processes.
            unsafe { libc::kill(p.pid, signal) };
        }
    }

    /// Stops, then kills every process of the check, until none is left; reaps those that
    /// became this process's children (the leader is reaped by its `Child`).
    pub fn kill_all(&self) {
        let me = std::process::id() as i32;
        for _ in 0..1000 {
            let live: Vec<Proc> = self.members().into_iter().filter(|p| p.state != 'Z').collect();
            // Stopped processes cannot fork: a fork loop is frozen before it is killed.
            for p in &live {
                // SAFETY: as in `signal`.
                unsafe { libc::kill(p.pid, libc::SIGSTOP) };
            }
            for p in &live {
                // SAFETY: as in `signal`.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
            }
            self.reap_orphans(me);
            if live.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Reaps the check's processes that were reparented to this process and have ended.
    fn reap_orphans(&self, me: i32) {
        for p in all_procs() {
            if p.ppid == me && p.pid != self.leader && p.start >= self.leader_start && p.state == 'Z' {
                // SAFETY: waitpid on a zombie child of ours; the status is not needed.
                unsafe { libc::waitpid(p.pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
    }
}

/// Called in the check's process between fork and exec: joins its cgroup (`procs`, a
/// cgroup.procs path), dies with the grader, and gets its limits. Only async-signal-safe calls.
pub fn limit_child(procs: Option<&std::ffi::CStr>, nproc: u64, cpu_seconds: u64) -> std::io::Result<()> {
    if let Some(path) = procs {
        // SAFETY: open/write/close on a path prepared before fork; "0" means this process.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }
    let set = |resource, limit: u64| {
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct we pass; it changes this (child) process only.
        unsafe { libc::setrlimit(resource, &rlimit) };
    };
    // SAFETY: prctl(PR_SET_PDEATHSIG) and setpriority change this (child) process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, CHECK_NICENESS);
    }
    set(libc::RLIMIT_AS, MAX_ADDRESS_SPACE);
    set(libc::RLIMIT_NPROC, nproc);
    // Per process, a backstop behind the grader's count over the whole tree.
    set(libc::RLIMIT_CPU, cpu_seconds);
    set(libc::RLIMIT_CORE, 0);
    Ok(())
}

/// The RLIMIT_NPROC for a check: every task (process or thread) on the machine now, which bounds
/// this user's, plus `EXTRA_PROCESSES` (the limit counts the user's threads, not the check's).
pub fn nproc_limit() -> u64 {
    let tasks = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse::<u64>().ok())
        .unwrap_or(4096);
    tasks + EXTRA_PROCESSES
}
