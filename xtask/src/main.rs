//! `cargo xtask COMMAND`: the kit's commands for course staff and maintainers (the `cargo xtask`
//! convention: a plain binary in the workspace, run through the alias in `.cargo/config.toml`).
//!
//! `grade` (what `cargo grade` runs, and `cargo grade --watch`) and `svm-check` ship to students; the course staff's
//! commands are behind the `instructor` feature, one module file each, and `student-kit` drops
//! them from the student copy (each such item is the one line after its feature gate).

#[cfg(feature = "instructor")]
mod ci;
mod grade;
#[cfg(feature = "instructor")]
mod gradescope;
mod kit;
#[cfg(feature = "instructor")]
mod mutants;
mod progress;
#[cfg(feature = "instructor")]
mod shape;
#[cfg(feature = "instructor")]
mod stability;
#[cfg(feature = "instructor")]
mod student_kit;
#[cfg(feature = "instructor")]
mod submissions;
mod svm_check;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Course staff's and maintainers' commands of the KVM lab kit.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Grades the labs (what `cargo grade` runs): a lab file that does not compile costs only its
    /// own checks and those that need it.
    Grade(grade::Args),
    /// Run kvm-hello, the hostile-guest corpus and the grader under KVM on AMD-V (emulated by
    /// QEMU) and compare with this host, check by check.
    SvmCheck(svm_check::Args),
    /// Writes the repository a class receives: no reference code, a student README, a CI workflow.
    #[cfg(feature = "instructor")]
    StudentKit(student_kit::Args),
    /// Grades a folder of submissions (one folder per student) into a CSV gradebook.
    #[cfg(feature = "instructor")]
    GradeSubmissions(submissions::Args),
    /// Writes a Gradescope autograder (setup.sh, run_autograder and the kit) as a zip file.
    #[cfg(feature = "instructor")]
    Gradescope(gradescope::Args),
    /// The slow system tests that the README's test command leaves (a student copy's round trip,
    /// cargo grade --watch, a class, the Gradescope autograder), then svm-check.
    #[cfg(feature = "instructor")]
    Ci(ci::Args),
    /// Mutation testing of the labs' references with cargo-mutants, graded by the grader's checks:
    /// caught / missed / timeout / unviable per lab; --record writes grader/mutants.md, --check (CI)
    /// fails only if a mutant recorded as caught is missed now.
    #[cfg(feature = "instructor")]
    Mutants(mutants::Args),
    /// Runs every check N times (default 50) on the reference build, optionally beside a build
    /// of the workspace, and counts the passes (--record writes grader/stability.md).
    #[cfg(feature = "instructor")]
    Stability(stability::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Grade(args) => ExitCode::from(grade::run(args)),
        Command::SvmCheck(args) => svm_check::run(&args),
        #[cfg(feature = "instructor")]
        Command::StudentKit(args) => ExitCode::from(student_kit::run(args)),
        #[cfg(feature = "instructor")]
        Command::GradeSubmissions(args) => ExitCode::from(submissions::run(args)),
        #[cfg(feature = "instructor")]
        Command::Gradescope(args) => ExitCode::from(gradescope::run(args)),
        #[cfg(feature = "instructor")]
        Command::Ci(args) => ExitCode::from(ci::run(args)),
        #[cfg(feature = "instructor")]
        Command::Mutants(args) => ExitCode::from(mutants::run(args)),
        #[cfg(feature = "instructor")]
        Command::Stability(args) => ExitCode::from(stability::run(args)),
    }
}
