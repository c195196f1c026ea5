//! `cargo xtask COMMAND`: the kit's commands for course staff and maintainers (the `cargo xtask`
//! convention: a plain binary in the workspace, run through the alias in `.cargo/config.toml`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod svm_check;

/// Course staff's and maintainers' commands of the KVM lab kit.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run kvm-hello, the hostile-guest corpus and the grader under KVM on AMD-V (emulated by
    /// QEMU) and compare with this host, check by check.
    SvmCheck(svm_check::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::SvmCheck(args) => svm_check::run(&args),
    }
}
