//! A hostile probe for the kit's isolation tests (grader/tests/isolation.rs): the reference labs,
//! except that lab 2's `setup_long_mode_page_tables` and `translate` attack the grading instead of
//! working. The attack is chosen by the file's name, `hostile-ATTACK` (the test links this
//! program under that name), so the jailed probe needs no argument or variable.

use std::io::Write;
use std::os::fd::FromRawFd;

use grader_probe::lab2_paging::{self, GuestMemoryMmap, Lab2Error, Walk};
use grader_probe::{Labs, Probe};

/// What a forgery writes: an answer of the right shape with made-up values.
const FORGED: &[u8] = br#"{"Reply":{"cr3":{"Ok":8192},"memory":{"words":[[8192,12295]],"more":false}}}"#;
const FORGED_WALKS: &[u8] = br#"{"Reply":[]}"#;

fn attack() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .and_then(|name| name.strip_prefix("hostile-").map(str::to_owned))
        .unwrap_or_default()
}

/// Every pid from this process up to the first it cannot see.
fn ancestors() -> Vec<i32> {
    let mut pids = Vec::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        let after = stat.rsplit(')').next().unwrap_or_default();
        pid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pids.push(pid);
    }
    pids.extend([1, 2, 3]);
    pids
}

/// Writes `bytes` on every descriptor 0..256 (the answer pipe among them).
fn spray(bytes: &[u8]) {
    for fd in 0..256 {
        // SAFETY: a descriptor number that may or may not be open; the File is leaked, never closed.
        let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let _ = file.write_all(bytes);
    }
}

/// Reads every readable mapping of this process and of each ancestor it can open, looking for
/// anything verdict-like; returns what it found.
fn scan_memory() -> Vec<String> {
    let mut found = Vec::new();
    let mut pids = vec![std::process::id() as i32];
    pids.extend(ancestors());
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let Ok(mut mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
            continue;
        };
        for line in maps
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.starts_with('r')))
        {
            let range = line.split_whitespace().next().unwrap_or_default();
            let (Some(start), Some(end)) = range
                .split_once('-')
                .map(|(a, b)| (u64::from_str_radix(a, 16).ok(), u64::from_str_radix(b, 16).ok()))
                .unwrap_or((None, None))
            else {
                continue;
            };
            if end - start > 64 << 20 {
                continue;
            }
            use std::io::{Read, Seek, SeekFrom};
            let mut bytes = vec![0u8; (end - start) as usize];
            if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut bytes).is_ok() {
                for word in ["\"passed\"", "expected", "secret", "verdict", "Score:"] {
                    if bytes.windows(word.len()).any(|w| w == word.as_bytes()) {
                        found.push(format!("{pid}:{word}"));
                    }
                }
            }
        }
    }
    found
}

fn attack_now() {
    match attack().as_str() {
        "spray-forged-answers" => {
            let found = scan_memory();
            spray(FORGED);
            spray(format!("{found:?}").as_bytes());
            std::process::exit(0);
        }
        "ancestors" => {
            for pid in ancestors() {
                for fd in [0, 1, 2] {
                    if let Ok(mut out) = std::fs::OpenOptions::new()
                        .write(true)
                        .open(format!("/proc/{pid}/fd/{fd}"))
                    {
                        let _ = out.write_all(b"Score: 999/999\n");
                    }
                }
                if let Ok(mut mem) = std::fs::OpenOptions::new().write(true).open(format!("/proc/{pid}/mem")) {
                    let _ = mem.write_all(b"Score: 999/999");
                }
                // SAFETY: ptrace and kill on another process's pid: the attack; refused or harmless.
                unsafe {
                    libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        "terminal" => {
            if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
                let _ = tty.write_all(b"Score: 999/999\n");
            }
            for fd in 0..3 {
                for byte in b"echo pwned\n" {
                    // SAFETY: TIOCSTI with a pointer to one byte: the attack; refused without a terminal.
                    unsafe { libc::ioctl(fd, libc::TIOCSTI, byte as *const u8) };
                }
            }
        }
        "grader-files" => {
            let exe = std::env::current_exe().unwrap_or_default();
            let dir = exe.parent().map(|d| d.to_path_buf()).unwrap_or_default();
            for target in [
                dir.join("grader"),
                dir.join("grader-probe"),
                exe.clone(),
                dir.join("planted"),
            ] {
                let _ = std::fs::write(&target, b"#!/bin/sh\necho Score: 999/999\n");
            }
        }
        // SAFETY: fork in the probe; the child outlives the request unless the jail ends it.
        "escapee" if unsafe { libc::fork() } == 0 => {
            // SAFETY: setsid changes only this child's session.
            unsafe { libc::setsid() };
            std::thread::sleep(std::time::Duration::from_millis(300));
            spray(FORGED);
            std::thread::sleep(std::time::Duration::from_secs(30));
            std::process::exit(0);
        }
        _ => {}
    }
}

fn hostile_tables(_: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
    attack_now();
    Ok(0x1000) // wrong: the attack is all this function does
}

fn hostile_translate(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
    if attack() == "spray-forged-answers" {
        spray(FORGED_WALKS);
        std::process::exit(0);
    }
    lab2_paging::translate(memory, cr3, gva)
}

fn main() -> std::process::ExitCode {
    let mut probe = Probe::built();
    probe.labs = Labs {
        setup_long_mode_page_tables: hostile_tables,
        translate: hostile_translate,
        ..Labs::BUILT
    };
    grader_probe::main_with(probe)
}
