//! A reader that goes away (`kvm-hello ... | head`) ends kvm-hello quietly: killed by SIGPIPE,
//! as `cat` is (a shell reports 141), with nothing on the other stream, on either stream.
#![cfg(feature = "solution")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::{image_file, require_kvm};

/// A long-mode guest that prints 'x' on port 0xE9 forever: `mov $'x', %al; out %al, $0xe9; jmp`.
const PRINTS_FOREVER: [u8; 6] = [0xb0, b'x', 0xe6, 0xe9, 0xeb, 0xfa];

/// `name`: the image's file, one per test (two tests rewriting one file race with the runs reading it).
fn kvm_hello(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin!("kvm-hello"));
    let image = image_file(name, &PRINTS_FOREVER);
    // The timeout ends the run if SIGPIPE does not.
    command.args(["--timeout", "20", "--guest"]).arg(image).args(args);
    command
}

#[test]
fn a_closed_stdout_ends_the_run_by_sigpipe_without_a_message() {
    require_kvm();
    let mut child = kvm_hello("prints-forever-stdout.bin", &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"xxxxxxxxxxxxxxxx");
    drop(stdout); // `| head -c 16`
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}; stderr: {stderr}");
    assert_eq!(stderr, "", "nothing on stderr");
}

#[test]
fn a_closed_stderr_ends_a_trace_by_sigpipe_without_a_message() {
    require_kvm();
    let mut child = kvm_hello("prints-forever-stderr.bin", &["--trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert_eq!(line, "trace: io out, port 0xe9, 1 byte(s): \"x\"\n");
    }
    drop(stderr); // `2>&1 | head -3`
    let mut stdout = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}");
    assert!(stdout.iter().all(|&b| b == b'x'), "only the guest's output on stdout");
}
