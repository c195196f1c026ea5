//! `cargo grade [lab1|lab2|lab3|lab4|e2e|lab0|lab5|CHECK…] [--gradescope results.json] [--json] [--strict]`

use std::path::PathBuf;
use std::process::ExitCode;

use grader::runner::{RUN_CHECK_ARG, matches_filter, run_check_here, run_suite};
use grader::{Ctx, all_checks, find_check, scoreboard};

const USAGE: &str = "\
grader: grades the labs of the KVM lab kit (cargo grade).

Usage: cargo grade [lab1|lab2|lab3|lab4|e2e|lab0|lab5|CHECK ...] [OPTIONS]

Options:
  --gradescope PATH  also write Gradescope's results.json to PATH
  --json             print every check's outcome as JSON instead of the scoreboard
  --list             list the checks
  --strict           exit with status 1 when a check does not pass
  -h, --help         print this help
";

/// The grader binary is also kvm-hello (`grader vmm ARGS`), so the end-to-end checks run the VMM
/// built from the same labs without a second build.
const VMM_ARG: &str = "vmm";

fn this_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("grader"))
}

fn ctx() -> Ctx {
    Ctx::built((this_exe(), vec![VMM_ARG.to_owned()]))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(VMM_ARG) => {
            let status = kvm_hello::main_with_args(args[1..].iter().map(Into::into));
            return ExitCode::from(status.code() as u8);
        }
        Some(RUN_CHECK_ARG) => {
            let Some(check) = args.get(1).and_then(|name| find_check(name)) else {
                eprintln!("grader: {RUN_CHECK_ARG} needs the name of a check (see --list)");
                return ExitCode::from(2);
            };
            println!("{}", run_check_here(&check, &ctx()));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }

    let (mut words, mut gradescope, mut json, mut strict) = (Vec::new(), None, false, false);
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

    let results = run_suite(&this_exe(), |check| matches_filter(check, &words));
    if json {
        println!("{}", scoreboard::json_lines(&results));
    } else {
        print!("{}", scoreboard::text(&results));
    }
    if let Some(path) = gradescope {
        let report = serde_json::to_string_pretty(&scoreboard::gradescope(&results)).expect("JSON");
        if let Err(err) = std::fs::write(&path, report) {
            eprintln!("grader: cannot write {}: {err}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("grader: wrote {}", path.display());
    }
    let all_passed = results.iter().all(|r| r.outcome.passed());
    if strict && !all_passed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
