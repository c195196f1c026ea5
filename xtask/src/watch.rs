//! `cargo grade --watch`: rustlings' watch mode. Each time a lab file (`labs/*/src/lib.rs`) is
//! saved, that lab's checks are graded through the same path as `cargo grade labN` (a lab file
//! that does not compile is reported with the compiler's first error), and one line says the
//! first check that does not pass, with its message, or that the lab passes. Nothing else is
//! printed. Saves are seen through the kernel's file notifications (the notify crate), not by
//! polling; an editor's several writes of one save are graded once. Ctrl-C stops it (status 130;
//! SIGTERM, 143).

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use serde_json::Value;

use crate::grade;
use crate::kit::{LABS, Lab};

/// A save is graded once no write to lab files has come for this long (an editor writes a file
/// more than once per save: truncate and write, or a backup and a rename).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The exit status after a signal, as a shell reports a process it stopped: 128 + its number
/// (130 after Ctrl-C, 143 after SIGTERM).
const STATUS_SIGNALLED: i32 = 128;
/// The watch could not be set up (no inotify, a lab folder missing).
const STATUS_WATCH: u8 = 4;
/// What the watcher says before its one-line results.
const PREFIX: &str = "cargo grade --watch";

/// What wakes the watch loop.
#[derive(Debug)]
enum Wake {
    /// A file notification from the kernel (or the watcher's error).
    File(notify::Result<notify::Event>),
    /// Ctrl-C (SIGINT) or SIGTERM.
    Interrupted,
}

pub fn run(root: &Path) -> u8 {
    let (wake, woken) = mpsc::channel();
    if let Err(message) = forward_interrupts(wake.clone()) {
        return fail(STATUS_WATCH, &message);
    }
    let mut watcher = match notify::recommended_watcher(move |event| {
        let _ = wake.send(Wake::File(event));
    }) {
        Ok(watcher) => watcher,
        Err(err) => return fail(STATUS_WATCH, &format!("cannot watch the lab files: {err}")),
    };
    // The folders, not the files: an editor may save by writing a new file and renaming it over
    // the old one, which a watch on the old file would not see.
    for lab in LABS {
        let dir = root.join("labs").join(lab.dir).join("src");
        if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            return fail(STATUS_WATCH, &format!("cannot watch {}: {err}", dir.display()));
        }
    }
    eprintln!("{PREFIX}: grading each lab file you save (labs/*/src/lib.rs); Ctrl-C stops");
    loop {
        let labs = match next_saves(root, &woken) {
            Ok(labs) => labs,
            Err(Stop::Interrupted) => return stopped(),
            Err(Stop::Failed(message)) => return fail(STATUS_WATCH, &message),
        };
        for lab in labs {
            let line = grade_lab(root, lab);
            if interrupted() {
                return stopped();
            }
            println!("{line}");
        }
    }
}

/// Why the watch ends.
#[derive(Debug)]
enum Stop {
    Interrupted,
    Failed(String),
}

/// Waits for a save of lab files, then for their writes to settle: the labs saved, in order.
fn next_saves(root: &Path, woken: &Receiver<Wake>) -> Result<BTreeSet<u8>, Stop> {
    let watcher_stopped = || Stop::Failed("the file watcher stopped".to_owned());
    let mut saved = BTreeSet::new();
    // When the last write to a lab file came: the save is graded DEBOUNCE after it.
    let mut last_write: Option<Instant> = None;
    loop {
        let wake = match last_write {
            None => woken.recv().map_err(|_| watcher_stopped())?,
            Some(at) => match woken.recv_timeout(DEBOUNCE.saturating_sub(at.elapsed())) {
                Ok(wake) => wake,
                Err(RecvTimeoutError::Timeout) => return Ok(saved),
                Err(RecvTimeoutError::Disconnected) => return Err(watcher_stopped()),
            },
        };
        match wake {
            Wake::Interrupted => return Err(Stop::Interrupted),
            Wake::File(Err(err)) => return Err(Stop::Failed(format!("the file watcher failed: {err}"))),
            Wake::File(Ok(event)) if is_write(&event.kind) => {
                let labs: Vec<u8> = event.paths.iter().filter_map(|path| lab_of(root, path)).collect();
                if !labs.is_empty() {
                    saved.extend(labs);
                    last_write = Some(Instant::now());
                }
            }
            // Reads (a build opens the lab files), metadata, other files: not a save.
            Wake::File(Ok(_)) => {}
        }
    }
}

/// Whether a file notification is a write: new contents, a new file, or one renamed into place.
fn is_write(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// The lab whose file `path` is.
fn lab_of(root: &Path, path: &Path) -> Option<u8> {
    LABS.iter()
        .find(|lab| path == root.join(lab.file()) || path == canonical(root).join(lab.file()))
        .map(|lab| lab.number)
}

fn canonical(root: &Path) -> PathBuf {
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// Grades lab `number` as `cargo grade labN` does: one line for the student.
fn grade_lab(root: &Path, number: u8) -> String {
    let Some(lab) = LABS.iter().find(|lab| lab.number == number).copied() else {
        return format!("{PREFIX}: no lab {number}");
    };
    let prepared = match grade::prepare(root, grade::local_plan(false)) {
        Ok(prepared) => prepared,
        Err((_, message)) => return format!("lab {number}: {message}"),
    };
    if let Some(error) = prepared.broken.get(&number) {
        return format!("lab {number}: {} does not compile: {error}", lab.file());
    }
    let output = prepared
        .command(&[format!("lab{number}"), "--json".to_owned()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match output {
        Ok(out) => match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(Value::Array(results)) => summary(lab, &results),
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let cause = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no report");
                format!("lab {number}: the grader gave no report: {cause}")
            }
        },
        Err(err) => format!("lab {number}: cannot run the grader: {err}"),
    }
}

/// The first check of the lab that did not pass, with its message; or that every check passed.
fn summary(lab: Lab, results: &[Value]) -> String {
    let number = lab.number;
    let outcome = |r: &Value| r["outcome"].as_str().unwrap_or_default().to_owned();
    let passed = results.iter().filter(|r| outcome(r) == "passed").count();
    let not_run: Vec<&Value> = results.iter().filter(|r| outcome(r) == "not_run").collect();
    let ran = results.len() - not_run.len();
    if results.is_empty() {
        return format!("lab {number}: the grader has no check for it");
    }
    if let Some(first) = results
        .iter()
        .find(|r| !matches!(outcome(r).as_str(), "passed" | "not_run"))
    {
        let message = first["message"].as_str().filter(|m| !m.is_empty());
        return format!(
            "lab {number}: {passed}/{ran} checks pass; {}: {}",
            first["check"].as_str().unwrap_or_default(),
            message.map_or_else(|| outcome(first).replace('_', " "), str::to_owned)
        );
    }
    match not_run.first() {
        None => format!("lab {number}: passes ({passed}/{passed} checks)"),
        Some(first) => format!(
            "lab {number}: the {passed} checks that ran pass; {} not run: {}",
            not_run.len(),
            first["message"].as_str().unwrap_or_default()
        ),
    }
}

fn stopped() -> u8 {
    let signal = INTERRUPTED.load(Ordering::SeqCst);
    let name = if signal == libc::SIGTERM { "SIGTERM" } else { "Ctrl-C" };
    eprintln!("{PREFIX}: stopped ({name})");
    u8::try_from(STATUS_SIGNALLED + signal).unwrap_or(u8::MAX)
}

fn fail(code: u8, message: &str) -> u8 {
    eprintln!("{PREFIX}: {message}");
    code
}

/// The signal that stopped the watch (0: none yet), set by the handler: a grading that ends after
/// it prints nothing.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// The write end of the pipe that wakes the watch loop from the signal handler.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) != 0
}

extern "C" fn on_interrupt(signal: libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    // SAFETY: write(2) of one byte from a static buffer is async-signal-safe; a full or closed
    // pipe only makes it fail, and the loop is woken by the byte already there.
    unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
}

/// SIGINT and SIGTERM wake the watch loop (a pipe written by the handler, read by a thread):
/// Ctrl-C also reaches a build or grading under way, which stops with it. The handlers are reset
/// to the default in the children (exec does so).
fn forward_interrupts(wake: Sender<Wake>) -> Result<(), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("cannot make a pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the read end was just created and is owned by nobody else.
    let mut read_end = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
    // The write end stays open for the life of the process: the handler may write at any time.
    WAKE_FD.store(fds[1], Ordering::SeqCst);
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        if read_end.read(&mut byte).is_ok_and(|n| n == 1) {
            let _ = wake.send(Wake::Interrupted);
        }
    });
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic and writes to a pipe, both
        // async-signal-safe.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(number: u8) -> Lab {
        LABS[usize::from(number)]
    }

    #[test]
    fn the_first_check_that_does_not_pass_is_named_with_its_message() {
        let results: Vec<Value> = serde_json::from_str(
            r#"[{"check":"lab2_a","outcome":"passed","message":""},
                {"check":"lab2_b","outcome":"not_run","message":"no usable KVM"},
                {"check":"lab2_c","outcome":"not_implemented","message":"not implemented yet: lab2 translate"},
                {"check":"lab2_d","outcome":"failed","message":"wrong"}]"#,
        )
        .unwrap();
        assert_eq!(
            summary(lab(2), &results),
            "lab 2: 1/3 checks pass; lab2_c: not implemented yet: lab2 translate"
        );
    }

    #[test]
    fn a_lab_passes_or_says_which_checks_did_not_run() {
        let passed: Vec<Value> =
            serde_json::from_str(r#"[{"check":"lab1_a","outcome":"passed","message":""}]"#).unwrap();
        assert_eq!(summary(lab(1), &passed), "lab 1: passes (1/1 checks)");
        let not_run: Vec<Value> = serde_json::from_str(
            r#"[{"check":"lab1_a","outcome":"passed","message":""},{"check":"lab1_b","outcome":"not_run","message":"no usable KVM (/dev/kvm)"}]"#,
        )
        .unwrap();
        assert_eq!(
            summary(lab(1), &not_run),
            "lab 1: the 1 checks that ran pass; 1 not run: no usable KVM (/dev/kvm)"
        );
    }

    #[test]
    fn only_writes_to_lab_files_are_saves() {
        let root = Path::new("/kit");
        assert_eq!(lab_of(root, Path::new("/kit/labs/lab3-registers/src/lib.rs")), Some(3));
        assert_eq!(
            lab_of(root, Path::new("/kit/labs/lab3-registers/src/solution.rs")),
            None
        );
        assert_eq!(
            lab_of(root, Path::new("/kit/labs/lab3-registers/src/.lib.rs.swp")),
            None
        );
        assert!(is_write(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!is_write(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!is_write(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
    }
}
