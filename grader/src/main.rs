//! `cargo grade [lab1|lab2|lab3|lab4|e2e|lab0|lab5|CHECK…] [--gradescope results.json] [--json] [--seed N] [--strict]`

use std::path::PathBuf;
use std::process::ExitCode;

use grader::runner::{self, RUN_CHECK_ARG, matches_filter, run_suite};
use grader::{all_checks, rng, scoreboard};

const USAGE: &str = "\
grader: grades the labs of the KVM lab kit (cargo grade).

Usage: cargo grade [lab1|lab2|lab3|lab4|e2e|lab0|lab5|CHECK ...] [OPTIONS]

Options:
  --gradescope PATH  also write Gradescope's results.json to PATH
  --json             print every check's outcome as JSON instead of the scoreboard
  --list             list the checks
  --seed N           draw the checks' inputs from seed N (the scoreboard prints the seed of each run)
  --strict           a check this host cannot run fails (for an official grading machine), and the
                     grader exits with status 1 when a check does not pass
  -h, --help         print this help

Exit status: 0 graded (whatever the score), 1 a check did not pass under --strict, 2 bad usage,
130/143 interrupted by SIGINT/SIGTERM.
";

/// The grader binary is also kvm-hello (`grader vmm ARGS`), so the end-to-end checks run the VMM
/// built from the same labs without a second build.
const VMM_ARG: &str = "vmm";

fn this_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("grader"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(VMM_ARG) => {
            let status = kvm_hello::main_with_args(args[1..].iter().map(Into::into));
            return ExitCode::from(status.code() as u8);
        }
        Some(RUN_CHECK_ARG) => {
            return ExitCode::from(runner::child_main((this_exe(), vec![VMM_ARG.to_owned()])));
        }
        _ => {}
    }

    let (mut words, mut gradescope, mut json, mut strict, mut seed) = (Vec::new(), None, false, false, None);
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--list" => {
                for check in all_checks() {
                    println!("{:<40} {} pt  {}", check.name, check.points, check.title);
                }
                return ExitCode::SUCCESS;
            }
            "--json" => json = true,
            "--strict" => strict = true,
            "--seed" => match rest.next().map(|s| s.parse::<u64>()) {
                Some(Ok(n)) => seed = Some(n),
                _ => {
                    eprintln!("grader: --seed needs a number, e.g. --seed 12345 (the scoreboard prints it)");
                    return ExitCode::from(2);
                }
            },
            "--gradescope" => match rest.next() {
                Some(path) => gradescope = Some(PathBuf::from(path)),
                None => {
                    eprintln!("grader: --gradescope needs a file name, e.g. --gradescope results.json");
                    return ExitCode::from(2);
                }
            },
            other if other.starts_with('-') => {
                eprintln!("grader: unknown option '{other}' (see --help)");
                return ExitCode::from(2);
            }
            word => words.push(word.to_owned()),
        }
    }
    if !words.is_empty() && !all_checks().iter().any(|c| matches_filter(c, &words)) {
        eprintln!("grader: no check matches {words:?}: try lab1 to lab4, e2e, lab0, lab5 or a name from --list");
        return ExitCode::from(2);
    }

    runner::forward_interrupts();
    // Lab code runs as the same user: without this it could open the grader's own stdout
    // through /proc/<grader>/fd and print a scoreboard of its own (non-dumpable, /proc/<pid>
    // belongs to root). Children are dumpable again after exec.
    // SAFETY: prctl(PR_SET_DUMPABLE) changes a flag of this process only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let seed = seed.unwrap_or_else(rng::fresh_seed);
    let mut suite = run_suite(&this_exe(), seed, |check| matches_filter(check, &words));
    if let Some(signal) = suite.interrupted {
        let name = if signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
        eprintln!("grader: interrupted ({name}): the running check and everything it started were stopped; no score");
        return ExitCode::from(128 + signal as u8);
    }
    if strict {
        suite = runner::strict(suite);
    }
    if json {
        println!("{}", scoreboard::json_lines(&suite));
    } else {
        print!("{}", scoreboard::text(&suite));
    }
    if let Some(path) = gradescope {
        let report = serde_json::to_string_pretty(&scoreboard::gradescope(&suite)).expect("JSON");
        if let Err(err) = std::fs::write(&path, report) {
            eprintln!("grader: cannot write {}: {err}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("grader: wrote {}", path.display());
    }
    let all_passed = suite.results.iter().all(|r| r.outcome.passed());
    if strict && !all_passed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
