//! `grader-probe`: the half of the grader that runs lab code (see the `grader-probe` crate). It
//! is a binary of this package so the grader's tests and `cargo build -p grader` have it beside
//! `grader`; `grader` itself never links lab code.

fn main() -> std::process::ExitCode {
    grader_probe::main()
}
