//! Helpers shared by kvm-hello's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::Command;

/// How long a test lets kvm-hello run before it kills it.
pub const HARD_STOP: Duration = Duration::from_secs(120);

/// kvm-hello as built for this test run (solution or student build, by this package's features).
pub fn kvm_hello() -> Command {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("kvm-hello");
    // A hard stop for the test itself, above `run_bound` of every --timeout the tests pass.
    cmd.timeout(HARD_STOP);
    cmd
}

/// The longest a run with `--timeout timeout_secs` may take, whatever the load: the watchdog's
/// wall-clock ceiling, the grace a stopped vCPU thread gets, and time to start and end a process
/// on a busy machine. (`--timeout` is CPU time: on a loaded machine a run takes longer than it.)
pub fn run_bound(timeout_secs: f64) -> Duration {
    const PROCESS_SLACK: Duration = Duration::from_secs(5);
    Duration::from_secs_f64(timeout_secs) * kvm_hello::vmm::CEILING_FACTOR + kvm_hello::vmm::KICK_GRACE + PROCESS_SLACK
}

/// Fails the calling test with a clear message when /dev/kvm cannot be used.
pub fn require_kvm() {
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "this test runs guests and needs read/write access to /dev/kvm ({err}); see the book's \
             Troubleshooting chapter"
        );
    }
}

/// Whether this host's KVM is PVM, which refuses 32-bit paging.
pub fn is_pvm_host() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Writes an image into a fresh file under the target directory and returns its path.
pub fn image_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvm-hello-images");
    std::fs::create_dir_all(&dir).expect("create the image folder");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the image");
    path
}
