//! `kvm-hello --gdb` with a real gdb in batch mode (Debian's `gdb` package; `.ci/run` installs it):
//! the session of the book's "Debugging your guest" chapter, in long and protected mode, a fifth
//! breakpoint, kill, and Ctrl-C. Every process is bounded in time and killed on failure.
#![cfg(feature = "solution")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::require_kvm;
use kvm_hello::step;

/// The longest a gdb session or kvm-hello under it may take here.
const DEADLINE: Duration = Duration::from_secs(60);
const SUMMARY: &str = "kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42";

fn require_gdb() {
    let found = Command::new("gdb").arg("--version").output();
    assert!(
        found.is_ok_and(|out| out.status.success()),
        "this test drives kvm-hello with gdb, which is not installed: apt-get install gdb (.ci/run does)"
    );
}

/// A kvm-hello serving gdb, killed when dropped.
struct Stub {
    child: Child,
    port: u16,
    stdout: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stub {
    /// Starts `kvm-hello --gdb 127.0.0.1:0 ARGS` and reads the port from its first line.
    fn start(name: &str, args: &[&str]) -> Stub {
        let stdout = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gdb-{name}.out"));
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("kvm-hello"))
            .args(["--gdb", "127.0.0.1:0"])
            .args(args)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvm-hello");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stub = Stub {
            child,
            port: 0,
            stdout,
            stderr: rx,
        };
        let first = stub
            .stderr
            .recv_timeout(DEADLINE)
            .expect("kvm-hello says where it waits");
        let port = first
            .strip_prefix("kvm-hello: waiting for gdb on 127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        stub.port = port.parse().expect("a port number");
        stub
    }

    /// Waits for kvm-hello to end: its status and the rest of its stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < DEADLINE, "kvm-hello did not end after gdb");
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines: Vec<String> = self.stderr.try_iter().collect();
        (status.code(), lines.join("\n"))
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap()
    }
}

/// Runs gdb in batch mode on `commands` against the stub; returns what it printed.
fn gdb(stub: &Stub, commands: &[String]) -> String {
    gdb_on_port(stub.port, commands)
}

/// Runs gdb in batch mode on `commands` against a stub on `port` (gdb retries the connection
/// for a while: `set tcp auto-retry` is on by default).
fn gdb_on_port(port: u16, commands: &[String]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"])
        .args(["-ex", "set disassembly-flavor intel"])
        .args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for command in commands {
        cmd.args(["-ex", command]);
    }
    // One pipe for both streams: gdb prints `monitor` output on stderr, in the session's order.
    let (mut out, writer) = std::io::pipe().expect("a pipe");
    let mut child = cmd
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("start gdb");
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gdb did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap()
}

/// The address of the first instruction whose disassembly starts with `prefix`, and of the one after it.
fn find(image: &[u8], bitness: u32, prefix: &str) -> (u64, u64) {
    let mut ip = 0;
    while (ip as usize) < image.len() {
        let instruction = step::decode(&image[ip as usize..], bitness, ip);
        if instruction.text.starts_with(prefix) {
            return (ip, ip + instruction.len as u64);
        }
        ip += instruction.len.max(1) as u64;
    }
    panic!("no `{prefix}` in the guest");
}

#[test]
fn a_gdb_session_breaks_on_the_first_out_steps_over_it_and_reads_the_result() {
    require_kvm();
    require_gdb();
    let (first_out, after_out) = find(guests::HELLO64, 64, "out");
    let (_, after_store) = find(guests::HELLO64, 64, "mov qword ptr [0x400]");
    let stub = Stub::start("long", &[]);
    let stdout = stub.stdout.display().to_string();
    let text = gdb(
        &stub,
        &[
            "print/x $rip".into(),
            "x/2i $pc".into(),
            format!("hbreak *{first_out:#x}"),
            "continue".into(),
            "print/x $rip".into(),
            "echo before-step:".into(),
            format!("shell cat {stdout}"),
            "echo \\n".into(),
            "stepi".into(),
            "print/x $rip".into(),
            "echo after-step:".into(),
            format!("shell cat {stdout}"),
            "echo \\n".into(),
            "delete".into(),
            format!("break *{after_store:#x}"),
            "continue".into(),
            "x/gx 0x400".into(),
            "monitor phys 0x400 8".into(),
            "delete".into(),
            "continue".into(),
        ],
    );
    let expect = [
        "$1 = 0x0".to_owned(),
        "=> 0x0:\tmov    rcx,0xfffffffffffffff2".to_owned(),
        format!("Hardware assisted breakpoint 1 at {first_out:#x}"),
        format!("$2 = {first_out:#x}"),
        "before-step:\n".to_owned(),
        format!("$3 = {after_out:#x}"),
        "after-step:H\n".to_owned(),
        "0x400:\t0x000000000000002a".to_owned(),
        "0x00000400: 2a 00 00 00 00 00 00 00".to_owned(),
        "[Inferior 1 (process 1) exited with code 052]".to_owned(),
    ];
    let mut rest = text.as_str();
    for line in &expect {
        let at = rest
            .find(line.as_str())
            .unwrap_or_else(|| panic!("gdb's session lacks {line:?} (in order):\n{text}"));
        rest = &rest[at + line.len()..];
    }
    assert_eq!(stub.output(), "Hello, world!\n");
    let (status, stderr) = stub.finish();
    assert_eq!((status, stderr.as_str()), (Some(0), SUMMARY), "gdb said:\n{text}");
}

#[test]
fn protected_mode_is_served_as_i386() {
    require_kvm();
    require_gdb();
    let (first_out, _) = find(guests::HELLO32, 32, "out");
    let stub = Stub::start("protected", &["--mode", "protected"]);
    let text = gdb(
        &stub,
        &[
            "print/x $eip".into(),
            "monitor help".into(),
            format!("break *{first_out:#x}"),
            "continue".into(),
            "print/x $eip".into(),
            "print/x $eax".into(),
            "delete".into(),
            "continue".into(),
        ],
    );
    for line in [
        "$1 = 0x0",
        "breakpoints (at most 4): ",
        &format!("$2 = {first_out:#x}"),
        "$3 = 0x48",
        "exited with code 052",
    ] {
        assert!(text.contains(line), "gdb's session lacks {line:?}:\n{text}");
    }
    let (status, stderr) = stub.finish();
    assert_eq!((status, stderr.as_str()), (Some(0), SUMMARY));
}

#[test]
fn where_the_debug_registers_do_not_fire_continue_steps_to_the_breakpoint() {
    use kvm_hello::labs::Labs;
    use kvm_hello::vmm::{self, GdbOptions, Program, RunConfig};
    require_kvm();
    require_gdb();
    let (first_out, _) = find(guests::HELLO64, 64, "out");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = std::thread::spawn(move || {
        vmm::run(RunConfig {
            labs: Labs::BUILT,
            mode: kit_common::Mode::Long,
            image: guests::HELLO64.to_vec(),
            capture_output: true,
            trace: false,
            timeout: Duration::from_secs(30),
            explain_walk: None,
            program: Program::Gdb(GdbOptions {
                address: ([127, 0, 0, 1], port).into(),
                step_to_breakpoints: true,
            }),
        })
    });
    let text = gdb_on_port(
        port,
        &[
            format!("hbreak *{first_out:#x}"),
            "continue".into(),
            "print/x $rip".into(),
            "delete".into(),
            "continue".into(),
        ],
    );
    for line in [
        format!("Breakpoint 1, {first_out:#018x} in ?? ()"),
        format!("$1 = {first_out:#x}"),
        "exited with code 052".to_owned(),
    ] {
        assert!(text.contains(&line), "gdb's session lacks {line:?}:\n{text}");
    }
    let report = run.join().expect("the run ends");
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.output, b"Hello, world!\n");
    assert_eq!(report.counts.total(), 15, "every exit was served while stepping");
}

#[test]
fn a_fifth_breakpoint_is_refused_clearly_and_kill_ends_the_run() {
    require_kvm();
    require_gdb();
    let stub = Stub::start("fifth", &[]);
    let mut commands: Vec<String> = (1..=5).map(|i| format!("hbreak *{i:#x}")).collect();
    commands.extend(["stepi".into(), "kill".into()]);
    let text = gdb(&stub, &commands);
    assert!(text.contains("Cannot insert hardware breakpoint"), "{text}");
    let (status, stderr) = stub.finish();
    assert!(
        stderr.contains("gdb asked for a fifth breakpoint") && stderr.contains("DR0-DR3"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("the run did not finish (book: Debugging your guest)"),
        "{stderr}"
    );
    assert_eq!(status, Some(4));
}

/// One packet of the GDB remote protocol.
fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |sum, b| sum.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

/// Reads until `needle` arrives or the deadline passes.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            started.elapsed() < DEADLINE,
            "no {needle:?} from the stub; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        if let Ok(n) = stream.read(&mut buf) {
            assert!(
                n > 0,
                "the stub closed the connection; got {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn ctrl_c_interrupts_a_spinning_guest() {
    require_kvm();
    let spin = common::image_file("gdb-spin.bin", &[0xeb, 0xfe]); // jmp .
    let stub = Stub::start("spin", &["--timeout", "30", "--guest", spin.to_str().unwrap()]);
    let mut conn = TcpStream::connect(("127.0.0.1", stub.port)).expect("connect to the stub");
    conn.write_all(&packet("c")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    conn.write_all(&[0x03]).unwrap(); // Ctrl-C
    // SIGINT is signal 2: a stop reply T02 (or S02).
    let reply = read_until(&mut conn, "02");
    assert!(reply.contains("$T02") || reply.contains("$S02"), "{reply}");
    conn.write_all(&packet("k")).unwrap();
    drop(conn);
    let (status, stderr) = stub.finish();
    assert_eq!(status, Some(4), "{stderr}");
}

#[test]
fn real_mode_is_not_supported_with_status_2() {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("kvm-hello"))
        .args(["--gdb", "127.0.0.1:0", "--mode", "real"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("kvm-hello: --gdb does not support real mode") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn after_detach_the_guest_runs_on_to_its_end() {
    require_kvm();
    require_gdb();
    let stub = Stub::start("detach", &[]);
    let text = gdb(&stub, &["stepi".into(), "hbreak *0x11".into(), "detach".into()]);
    assert!(text.contains("[Inferior 1 (process 1) detached]"), "{text}");
    let stdout = stub.stdout.clone();
    let (status, stderr) = stub.finish();
    assert_eq!((status, stderr.as_str()), (Some(0), SUMMARY), "gdb said:\n{text}");
    // The breakpoint gdb left behind does not stop the guest after the detach.
    assert_eq!(std::fs::read_to_string(stdout).unwrap(), "Hello, world!\n");
}
