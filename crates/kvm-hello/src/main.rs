//! `kvm-hello`: see `kvm-hello --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    end_quietly_when_the_reader_goes_away();
    let status = kvm_hello::main_with_args(std::env::args_os().skip(1));
    ExitCode::from(status.code() as u8)
}

/// A closed stdout or stderr (`kvm-hello --trace 2>&1 | head -3`) ends kvm-hello by SIGPIPE, at
/// once and without a message, as it ends `cat` and every C tool (a shell reports status 141).
/// Rust ignores SIGPIPE by default, which would turn such a write into an error to report on a
/// stream nobody reads.
fn end_quietly_when_the_reader_goes_away() {
    // SAFETY: `signal` only sets SIGPIPE's disposition back to the default (SIG_DFL is valid for
    // it); no handler of ours is installed, so nothing runs in signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
