//! `cargo grade [lab1|lab2|lab3|lab4|e2e|lab0|lab5|lab6|lab7|CHECK…] [--gradescope results.json] [--json] [--seed N] [--strict]`,
//! `cargo grade --list [--rules]`, `cargo grade --hint CHECK [--more]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser};

use grader::runner::{self, ProbeProgram, matches_filter, run_suite};
use grader::{all_checks, rng, rules, scoreboard};

/// The first lines of the help text.
const ABOUT: &str = "grader: grades the labs of the KVM lab kit (cargo grade).";

/// The last lines of the help text.
const STATUSES: &str = "\
Exit status: 0 graded (whatever the score), 1 a check did not pass under --strict, 2 bad usage,
4 --strict or --require-jail on a host that cannot jail lab code, 130/143 interrupted by SIGINT/SIGTERM.";

/// `--strict` where lab code cannot be jailed: no official grade.
const STATUS_NO_JAIL: u8 = 4;

/// The command line, parsed with clap as kvm-hello's is; every error is one line, status 2.
#[derive(Debug, Parser)]
#[command(
    name = "grader",
    about = ABOUT,
    long_about = None,
    after_help = STATUSES,
    override_usage = "cargo grade [lab1|lab2|lab3|lab4|e2e|lab0|lab5|lab6|lab7|CHECK ...] [OPTIONS]",
    args_override_self = true,
    disable_help_flag = true,
    disable_version_flag = true,
    term_width = 100,
    max_term_width = 100
)]
struct Cli {
    /// which checks: lab1 to lab4, e2e, lab0, lab5 to lab7 or part of a check's name (default: all)
    #[arg(value_name = "CHECK")]
    words: Vec<String>,
    /// also write Gradescope's results.json to PATH
    #[arg(long, allow_hyphen_values = true, value_name = "PATH", value_parser = parse_gradescope)]
    gradescope: Option<PathBuf>,
    /// print every check's outcome as JSON instead of the scoreboard
    #[arg(long)]
    json: bool,
    /// also write every check's outcome as JSON (as --json prints it) to PATH, a new file: the
    /// channel official grading reads, which lab code never holds
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// list the checks
    #[arg(long)]
    list: bool,
    /// with --list: one line per check, its name, a tab, and the rule it enforces
    #[arg(long, requires = "list")]
    rules: bool,
    /// the rule of CHECK and a first hint (never the answer)
    #[arg(long, value_name = "CHECK")]
    hint: Option<String>,
    /// with --hint: a second, more precise hint
    #[arg(long, requires = "hint")]
    more: bool,
    /// draw the checks' inputs from seed N (the scoreboard prints the seed of each run)
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = parse_seed)]
    seed: Option<u64>,
    /// a check this host cannot run fails (for an official grading machine), and the grader
    /// exits with status 1 when a check does not pass
    #[arg(long)]
    strict: bool,
    /// the probe program that runs the labs (default: grader-probe beside this program; cargo
    /// grade builds both)
    #[arg(long, value_name = "PATH")]
    probe: Option<PathBuf>,
    /// refuse to grade (status 4) where lab code cannot be jailed (--strict implies it)
    #[arg(long)]
    require_jail: bool,
    /// print this help
    #[arg(short = 'h', long = "help", action = ArgAction::SetTrue)]
    help: bool,
}

const SEED_USAGE: &str = "--seed needs a number, e.g. --seed 12345 (the scoreboard prints it)";
const GRADESCOPE_USAGE: &str = "--gradescope needs a file name, e.g. --gradescope results.json";

fn parse_seed(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| SEED_USAGE.to_owned())
}

fn parse_gradescope(text: &str) -> Result<PathBuf, String> {
    match text {
        "" => Err(GRADESCOPE_USAGE.to_owned()),
        path => Ok(PathBuf::from(path)),
    }
}

/// clap's error as one line naming the cause.
fn usage_error(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(text)) => text.split(' ').next().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    match err.kind() {
        ErrorKind::ValueValidation => std::error::Error::source(err).map_or_else(String::new, |e| e.to_string()),
        ErrorKind::InvalidValue if arg == "--seed" => SEED_USAGE.to_owned(),
        ErrorKind::InvalidValue if arg == "--gradescope" => GRADESCOPE_USAGE.to_owned(),
        ErrorKind::UnknownArgument => format!("unknown option '{arg}' (see --help)"),
        ErrorKind::MissingRequiredArgument => "--rules goes with --list, --more with --hint CHECK".to_owned(),
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            format!("{} (see --help)", first.trim_start_matches("error: "))
        }
    }
}

/// `--hint CHECK [--more]`: the check's rule and its first hint, or its second hint; status 2
/// for a name no check has.
fn print_hint(check: &str, more: bool) -> ExitCode {
    let Some(rule) = rules::rule_of(check) else {
        eprintln!("grader: no check is named {check:?}: `cargo grade --list` names them all");
        return ExitCode::from(2);
    };
    if more {
        println!("{check}, hint 2 of 2: {}", rule.hints[1]);
    } else {
        println!("{check}: {}", rule.rule);
        println!("hint 1 of 2: {}", rule.hints[0]);
        println!("(a second hint: cargo grade --hint {check} --more)");
    }
    ExitCode::SUCCESS
}

/// The probe beside this program: `cargo build -p grader --features probe` builds both.
fn default_probe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("grader"));
    exe.with_file_name("grader-probe")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();

    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        print!("{}", Cli::command().render_help());
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::try_parse_from(std::iter::once("grader".to_owned()).chain(args)) {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("grader: {}", usage_error(&err));
            return ExitCode::from(2);
        }
    };
    if let Some(check) = &cli.hint {
        return print_hint(check, cli.more);
    }
    if cli.list {
        for check in all_checks() {
            if cli.rules {
                let rule = rules::rule_of(check.name).map_or("(no rule written)", |rule| rule.rule);
                println!("{}\t{rule}", check.name);
            } else {
                let hidden = if check.hidden { " (hidden)" } else { "" };
                println!("{:<40} {} pt  {}{hidden}", check.name, check.points, check.title);
            }
        }
        return ExitCode::SUCCESS;
    }
    let Cli {
        words,
        gradescope,
        json,
        report,
        seed,
        strict,
        probe,
        require_jail,
        ..
    } = cli;
    let probe = probe.unwrap_or_else(default_probe);
    if !probe.is_file() {
        eprintln!(
            "grader: no probe at {}: build it with `cargo build -p grader --features probe` (cargo grade does), or name it with --probe",
            probe.display()
        );
        return ExitCode::from(2);
    }
    if !words.is_empty() && !all_checks().iter().any(|c| matches_filter(c, &words)) {
        eprintln!(
            "grader: no check matches {words:?}: try lab1 to lab4, e2e, lab0, lab5 to lab7 or a name from --list"
        );
        return ExitCode::from(2);
    }

    // From here on Ctrl-C stops the grader's children first (the jail's trial run included).
    runner::forward_interrupts();
    // Lab code runs jailed wherever this host can; an official grade needs the jail.
    let jail = match kit_jail::Jail::detect() {
        Ok(jail) => Some(jail),
        Err(why) if strict || require_jail => {
            eprintln!("grader: an official grade needs lab code jailed, and here it cannot be: {why}");
            return ExitCode::from(STATUS_NO_JAIL);
        }
        Err(why) => {
            eprintln!("grader: lab code runs unjailed here, as your user ({why}); official grading jails it");
            None
        }
    };
    // Unjailed, lab code runs as the same user: without this it could open the grader's own
    // stdout through /proc/<grader>/fd (non-dumpable, /proc/<pid> belongs to root). Children are
    // dumpable again after exec.
    // SAFETY: prctl(PR_SET_DUMPABLE) changes a flag of this process only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let seed = seed.unwrap_or_else(rng::fresh_seed);
    let mut suite = run_suite(&mut ProbeProgram { exe: probe, jail }, seed, |check| {
        matches_filter(check, &words)
    });
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
    if let Some(path) = report {
        // A new file only: an existing one (planted, or a stale report) is never taken for this run's.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| {
                use std::io::Write;
                writeln!(file, "{}", scoreboard::json_lines(&suite))
            });
        if let Err(err) = written {
            eprintln!("grader: cannot write the report {}: {err}", path.display());
            return ExitCode::from(2);
        }
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
