//! `cargo grade --watch` as a student meets it, in a student copy: a saved lab file is graded
//! once and answered in one line (passes, or its first check that does not pass with its
//! message, or the compiler's first error); other files are not graded; Ctrl-C, sent to the
//! process group as a terminal sends it, ends the watch with status 130 and one line.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use crate::common::*;

/// The longest wait for one answer: a first grading may build the grader, or its shadow copy
/// when a lab file does not compile (the whole kit, on a cold build).
const ANSWER_WAIT: Duration = Duration::from_secs(900);
/// How long the watch may take to end after Ctrl-C.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// `cargo grade --watch` running in a kit, its lines as they come.
struct Watch {
    child: Child,
    lines: Receiver<String>,
    /// Every line so far, for the failure messages.
    seen: Vec<String>,
    /// Whether the watch has ended and been waited for.
    ended: bool,
}

fn forward(stream: impl Read + Send + 'static, tag: &'static str, lines: Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = lines.send(format!("{tag}: {line}"));
        }
    });
}

impl Watch {
    fn start(kit: &Path) -> Watch {
        let mut child = cargo_command(kit, &["grade", "--watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("cargo runs");
        let (send, lines) = mpsc::channel();
        forward(child.stdout.take().unwrap(), "stdout", send.clone());
        forward(child.stderr.take().unwrap(), "stderr", send);
        Watch {
            child,
            lines,
            seen: Vec::new(),
            ended: false,
        }
    }

    /// The next line, as `stdout: …` or `stderr: …`.
    fn next(&mut self) -> String {
        match self.lines.recv_timeout(ANSWER_WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(_) => panic!(
                "cargo grade --watch said nothing more within {} s; it said: {:#?}",
                ANSWER_WAIT.as_secs(),
                self.seen
            ),
        }
    }

    /// Ctrl-C as a terminal sends it (to the whole process group), then the status and every
    /// line said after it.
    fn interrupt(mut self) -> (ExitStatus, Vec<String>) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group the watch leads; no memory is touched.
        unsafe { libc::kill(-group, libc::SIGINT) };
        let deadline = Instant::now() + STOP_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "cargo grade --watch still runs {} s after Ctrl-C",
                STOP_WAIT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.ended = true;
        // The readers end with the pipes: every line said after Ctrl-C.
        let after = self.lines.iter().collect();
        (status, after)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // A failed test leaves nothing running.
        // SAFETY: as in `interrupt`.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_saved_lab_file_is_graded_once_in_one_line_until_ctrl_c() {
    let copy = crate::student_copy();
    let kit = copy.path();
    let mut watch = Watch::start(kit);
    let banner = watch.next();
    assert!(
        banner.starts_with("stderr: cargo grade --watch: grading each lab file you save"),
        "{banner}"
    );

    // Lab 1 solved: it passes (every lab 1 check needs KVM, which this test needs too).
    solve(kit, "lab1-memory");
    let answer = watch.next();
    assert!(answer.starts_with("stdout: lab 1: passes ("), "{answer}");

    // A file beside a lab file, then a save of lab 3 in two writes, as editors do (truncate,
    // then write), with a half-typed function: one answer, the compiler's first error.
    let notes = kit.join("labs/lab3-registers/src/notes.txt");
    std::fs::write(&notes, "to do").unwrap();
    let lab3 = kit.join("labs/lab3-registers/src/lib.rs");
    let broken = format!("{}\npub fn half_typed( {{\n", read(&lab3));
    std::fs::write(&lab3, "").unwrap();
    std::fs::write(&lab3, &broken).unwrap();
    let answer = watch.next();
    assert!(
        answer.starts_with(
            "stdout: lab 3: labs/lab3-registers/src/lib.rs does not compile: labs/lab3-registers/src/lib.rs:"
        ) && answer.contains(": error"),
        "{answer}"
    );

    // Lab 2, saved untouched: its first check names its stub. It is the very next answer: lab 3
    // was graded once, the notes not at all.
    let lab2 = kit.join("labs/lab2-paging/src/lib.rs");
    std::fs::write(&lab2, read(&lab2)).unwrap();
    let answer = watch.next();
    assert!(
        answer.starts_with("stdout: lab 2: 0/") && answer.contains(": not implemented yet: lab2 "),
        "{answer}"
    );
    std::fs::remove_file(&notes).unwrap();

    let (status, after) = watch.interrupt();
    assert_eq!(status.code(), Some(130), "{status}; said after Ctrl-C: {after:?}");
    assert_eq!(after, ["stderr: cargo grade --watch: stopped (Ctrl-C)"]);
}
