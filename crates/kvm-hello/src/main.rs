//! `kvm-hello`: see `kvm-hello --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let status = kvm_hello::main_with_args(std::env::args_os().skip(1));
    ExitCode::from(status.code() as u8)
}
