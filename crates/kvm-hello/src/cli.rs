//! The command line, parsed with clap (derive): `kvm-hello [OPTIONS]` (see `kvm-hello --help`).
//!
//! clap reads the arguments; every error it finds becomes one line naming the cause (`UsageError`),
//! and the rules between options (which go together, which do not) are checked after it, in
//! `check`, so each has its own message.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use kit_common::Mode;

/// The watchdog's default, in CPU time of the vCPU thread: long enough for real mode under an
/// emulating KVM, short enough that a spinning guest gives quick feedback.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `--timeout` accepted: a day.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// `--step`'s default limit of instructions.
pub const DEFAULT_MAX_STEPS: u64 = 10_000;
/// `--quantum-ms`'s default.
pub const DEFAULT_QUANTUM: Duration = Duration::from_millis(10);
/// `--share`'s default.
pub const DEFAULT_SHARES: [u32; 2] = [70, 30];
/// `--duration-ms`'s default.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(1000);
/// The longest `--quantum-ms` and `--duration-ms`: ten minutes.
pub const MAX_SCHEDULE_MS: u64 = 600_000;

/// The first lines of the help text.
const ABOUT: &str = "\
kvm-hello: the KVM lab kit's VMM. Runs a guest in the chosen CPU mode and prints what it
writes to port 0xE9.";

/// The last lines of the help text.
const STATUSES: &str = "\
Exit status: 0 ok, 1 wrong result, 2 bad usage or input, 3 KVM unavailable, 4 guest fault or
unexpected exit, 5 timeout, 6 a lab stub is not implemented yet, 7 lab code panicked.
A closed stdout or stderr (`| head`) ends kvm-hello quietly by SIGPIPE (shell status 141).";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
// Parsed once per process: the size of `Options` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run a guest.
    Run(Options),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// The options of a run.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "kvm-hello",
    version,
    about = ABOUT,
    long_about = None,
    after_help = STATUSES,
    disable_help_flag = true,
    disable_version_flag = true,
    max_term_width = 100,
    term_width = 100
)]
pub struct Options {
    /// long (default), protected, paged32 or real
    #[arg(long, allow_hyphen_values = true, value_name = "MODE", default_value = "long", hide_default_value = true, value_parser = parse_mode, action = ArgAction::Set)]
    pub mode: Mode,
    /// a flat image loaded at guest physical 0 (default: the kit's guest for MODE)
    #[arg(long, allow_hyphen_values = true, value_name = "IMAGE", value_parser = parse_guest)]
    pub guest: Option<PathBuf>,
    /// print one JSON report on stdout instead of the guest's output (with --step: one record
    /// per instruction)
    #[arg(long)]
    pub json: bool,
    /// print every exit on stderr
    #[arg(long)]
    pub trace: bool,
    /// stop a guest that has run SECONDS of vCPU (CPU) time without halting (default 5;
    /// fractions allowed); a vCPU thread that does not run at all for 12 x SECONDS (blocked), or
    /// a run that lasts 60 x SECONDS, is stopped too
    #[arg(long, allow_hyphen_values = true, value_name = "SECONDS", default_value = "5", hide_default_value = true, value_parser = parse_timeout)]
    pub timeout: Duration,
    /// run an extension lab instead: lwn (lab 0, the LWN warm-up), hypercalls (lab 5) or
    /// schedule (lab 6: two VMs on one thread)
    #[arg(long, allow_hyphen_values = true, value_name = "LAB", value_parser = parse_lab)]
    pub lab: Option<ExtraLab>,
    /// with --lab schedule: cooperative, round-robin (default) or weighted
    #[arg(long = "policy", allow_hyphen_values = true, value_name = "POLICY")]
    policy: Option<String>,
    /// with --lab schedule: the slice length in milliseconds of guest time (default 10)
    #[arg(long = "quantum-ms", allow_hyphen_values = true, value_name = "N", value_parser = parse_quantum)]
    quantum: Option<Duration>,
    /// with --lab schedule --policy weighted: the two VMs' shares in percent, adding up to 100
    /// (default 70:30)
    #[arg(long = "share", allow_hyphen_values = true, value_name = "A:B", value_parser = parse_shares)]
    shares: Option<[u32; 2]>,
    /// with --lab schedule: the two VMs' guest time together, in milliseconds (default 1000)
    #[arg(long = "duration-ms", allow_hyphen_values = true, value_name = "N", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The options of `--lab schedule`, from the four above (`check`).
    #[arg(skip)]
    pub schedule: ScheduleOptions,
    /// print pictures of the live VM instead of the guest's output: guest physical memory,
    /// kvm-hello's virtual memory, the page tables, a page walk, every exit
    #[arg(long)]
    pub explain: bool,
    /// the guest virtual address --explain walks (default 0x400; hex or decimal)
    #[arg(long, allow_hyphen_values = true, value_name = "GVA", value_parser = parse_address)]
    pub walk: Option<u64>,
    /// with --explain, also write the pictures as SVG files into DIR; with --lab schedule, the
    /// picture of the slices (schedule-POLICY.svg)
    #[arg(long, allow_hyphen_values = true, value_name = "DIR", value_parser = parse_svg)]
    pub svg: Option<PathBuf>,
    /// run the guest one instruction at a time and print each: its address, bytes, disassembly
    /// and the registers it changed, with the exits where they happen
    #[arg(long)]
    pub step: bool,
    /// with --step, stop after N instructions (default 10000)
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = parse_max_steps)]
    pub max_steps: Option<u64>,
    /// serve the GDB remote protocol on ADDR (e.g. 127.0.0.1:1234; port 0 picks a free one,
    /// loopback only) and run the guest under gdb (long or protected mode)
    #[arg(long, allow_hyphen_values = true, value_name = "ADDR", value_parser = parse_gdb_address)]
    pub gdb: Option<std::net::SocketAddr>,
    /// print this help
    #[arg(short = 'h', long = "help", action = ArgAction::SetTrue)]
    help: bool,
    /// print the version
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue)]
    version: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Long,
            guest: None,
            json: false,
            trace: false,
            timeout: DEFAULT_TIMEOUT,
            lab: None,
            explain: false,
            walk: None,
            svg: None,
            step: false,
            max_steps: None,
            gdb: None,
            policy: None,
            quantum: None,
            shares: None,
            duration: None,
            schedule: ScheduleOptions::default(),
            help: false,
            version: false,
        }
    }
}

/// The options of `--lab schedule` (lab 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// The policy, with its quantum and shares.
    pub policy: lab6_scheduling::Policy,
    /// The two VMs' guest time together.
    pub duration: Duration,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            policy: lab6_scheduling::Policy::RoundRobin {
                quantum: DEFAULT_QUANTUM,
            },
            duration: DEFAULT_DURATION,
        }
    }
}

/// The extension labs `--lab` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraLab {
    /// Lab 0: the VM of LWN's "Using the KVM API".
    Lwn,
    /// Lab 5: the hypercall guest.
    Hypercalls,
    /// Lab 6: two VMs scheduled on one thread.
    Schedule,
}

impl ExtraLab {
    /// The name on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            ExtraLab::Lwn => "lwn",
            ExtraLab::Hypercalls => "hypercalls",
            ExtraLab::Schedule => "schedule",
        }
    }
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see kvm-hello --help)", self.0)
    }
}

/// The help text (`kvm-hello --help`).
pub fn help() -> String {
    Options::command().render_help().to_string()
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    text.parse().map_err(|err: kit_common::UnknownMode| err.to_string())
}

fn parse_guest(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("--guest needs a file name".into());
    }
    Ok(PathBuf::from(text))
}

fn parse_svg(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("--svg needs a folder".into());
    }
    Ok(PathBuf::from(text))
}

fn parse_lab(text: &str) -> Result<ExtraLab, String> {
    match text {
        "lwn" => Ok(ExtraLab::Lwn),
        "hypercalls" => Ok(ExtraLab::Hypercalls),
        "schedule" => Ok(ExtraLab::Schedule),
        other => Err(format!("unknown lab '{other}': expected lwn, hypercalls or schedule")),
    }
}

/// A number in hex (`0x400`) or decimal, with `_` separators allowed.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => text.replace('_', "").parse().ok(),
    }
}

fn parse_address(text: &str) -> Result<u64, String> {
    parse_number(text)
        .ok_or_else(|| format!("--walk takes a guest virtual address such as 0x400 or 1024; got '{text}'"))
}

fn parse_max_steps(text: &str) -> Result<u64, String> {
    parse_number(text)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--max-steps takes a number of instructions above 0, e.g. 500; got '{text}'"))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "--timeout takes a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}, e.g. 5 or 0.5; got '{text}'"
        )
    };
    let secs: f64 = text.trim().parse().map_err(|_| bad())?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--quantum-ms` and `--duration-ms`: whole milliseconds, 1 to `MAX_SCHEDULE_MS`.
fn parse_millis(flag: &str, text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if (1..=MAX_SCHEDULE_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{flag} takes whole milliseconds from 1 to {MAX_SCHEDULE_MS}; got '{text}'"
        )),
    }
}

fn parse_quantum(text: &str) -> Result<Duration, String> {
    parse_millis("--quantum-ms", text)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_millis("--duration-ms", text)
}

/// `--share A:B`: two whole percentages, each at least 1, adding up to 100.
fn parse_shares(text: &str) -> Result<[u32; 2], String> {
    let bad =
        |why: &str| format!("--share takes A:B, two percentages adding up to 100 such as 70:30; got '{text}'{why}");
    let (a, b) = text.split_once(':').ok_or_else(|| bad(""))?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad(""))?,
        b.trim().parse().map_err(|_| bad(""))?,
    );
    if a == 0 || b == 0 {
        return Err(bad(": a VM with share 0 would never run"));
    }
    if a.checked_add(b) != Some(100) {
        return Err(bad(&format!(": they add up to {}", u64::from(a) + u64::from(b))));
    }
    Ok([a, b])
}

/// The schedule options from the values given (`None`: not given).
fn schedule_options(options: &Options) -> Result<ScheduleOptions, UsageError> {
    use lab6_scheduling::Policy;
    let quantum = options.quantum.unwrap_or(DEFAULT_QUANTUM);
    let policy = match options.policy.as_deref().unwrap_or("round-robin") {
        "cooperative" => Policy::Cooperative,
        "round-robin" => Policy::RoundRobin { quantum },
        "weighted" => Policy::Weighted {
            quantum,
            shares: options.shares.unwrap_or(DEFAULT_SHARES),
        },
        other => {
            return Err(UsageError(format!(
                "unknown policy '{other}': expected cooperative, round-robin or weighted"
            )));
        }
    };
    if options.shares.is_some() && !matches!(policy, Policy::Weighted { .. }) {
        return Err(UsageError("--share goes with --policy weighted".into()));
    }
    if options.quantum.is_some() && policy == Policy::Cooperative {
        return Err(UsageError(
            "--quantum-ms does not go with --policy cooperative (its slices end at console exits)".into(),
        ));
    }
    Ok(ScheduleOptions {
        policy,
        duration: options.duration.unwrap_or(DEFAULT_DURATION),
    })
}

/// `--gdb`'s address: loopback only, as the stub gives whoever connects the guest's memory.
fn parse_gdb_address(text: &str) -> Result<std::net::SocketAddr, String> {
    let address: std::net::SocketAddr = text.parse().map_err(|_| {
        format!("--gdb takes an address and port such as 127.0.0.1:1234 (port 0: any free one); got '{text}'")
    })?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "--gdb listens on loopback only (127.0.0.1 or [::1]): whoever connects controls the guest; got '{text}'"
        ));
    }
    Ok(address)
}

/// The option an argument of clap's error names: `--mode <MODE>` is `--mode`.
fn option_name(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(text) => Some(text.split(' ').next().unwrap_or(text).to_owned()),
        _ => None,
    }
}

/// clap's error, as one line naming the cause.
fn one_line(err: &clap::Error) -> String {
    let arg = option_name(err, ContextKind::InvalidArg).unwrap_or_default();
    match err.kind() {
        ErrorKind::ValueValidation => match std::error::Error::source(err) {
            Some(cause) => cause.to_string(),
            None => format!("{arg} has a bad value"),
        },
        ErrorKind::UnknownArgument if arg.starts_with('-') => format!("unknown option '{arg}'"),
        ErrorKind::UnknownArgument => format!("unexpected argument '{arg}'; a guest image goes after --guest"),
        ErrorKind::ArgumentConflict if option_name(err, ContextKind::PriorArg).as_deref() == Some(arg.as_str()) => {
            format!("{arg} is given twice")
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals => format!("{arg} needs a value"),
        ErrorKind::TooManyValues => format!("{arg} takes no value"),
        ErrorKind::InvalidUtf8 => "an argument is not UTF-8".to_owned(),
        _ => err
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned(),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let args: Vec<OsString> = args.into_iter().collect();
    // Help and version win over anything else on the line, as they do in most tools.
    for arg in &args {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("-V" | "--version") => return Ok(Command::Version),
            _ => {}
        }
    }
    let command = Options::command();
    let matches = command
        .try_get_matches_from(std::iter::once(OsString::from("kvm-hello")).chain(args))
        .map_err(|err| UsageError(one_line(&err)))?;
    let mut options = Options::from_arg_matches(&matches).map_err(|err| UsageError(one_line(&err)))?;
    let mode_given = matches.value_source("mode") == Some(clap::parser::ValueSource::CommandLine);
    check(&options, mode_given)?;
    if options.lab == Some(ExtraLab::Schedule) {
        options.schedule = schedule_options(&options)?;
    }
    Ok(Command::Run(options))
}

/// The rules between options.
fn check(options: &Options, mode_given: bool) -> Result<(), UsageError> {
    let usage = |text: &str| Err(UsageError(text.to_owned()));
    let svg_of_schedule = options.lab == Some(ExtraLab::Schedule) && options.walk.is_none();
    if (options.walk.is_some() || options.svg.is_some()) && !options.explain && !svg_of_schedule {
        return usage("--walk and --svg go with --explain (--svg also with --lab schedule)");
    }
    let schedule_flags = [
        (options.policy.is_some(), "--policy"),
        (options.quantum.is_some(), "--quantum-ms"),
        (options.shares.is_some(), "--share"),
        (options.duration.is_some(), "--duration-ms"),
    ];
    if let Some((_, flag)) = schedule_flags.iter().find(|(given, _)| *given)
        && options.lab != Some(ExtraLab::Schedule)
    {
        return Err(UsageError(format!("{flag} goes with --lab schedule")));
    }
    if options.max_steps.is_some() && !options.step {
        return usage("--max-steps goes with --step");
    }
    if let Some(lab) = options.lab {
        let conflict = if mode_given {
            Some("--mode (an extension lab sets its own mode)")
        } else if options.explain {
            Some("--explain")
        } else if options.step {
            Some("--step")
        } else if options.gdb.is_some() {
            Some("--gdb")
        } else if lab == ExtraLab::Schedule && options.guest.is_some() {
            Some("--guest (lab 6 runs its worker guest in both VMs)")
        } else if lab == ExtraLab::Schedule && options.trace {
            Some("--trace (the two VMs' exits would interleave)")
        } else {
            None
        };
        if let Some(conflict) = conflict {
            return Err(UsageError(format!("--lab {} does not go with {conflict}", lab.name())));
        }
    }
    let views = [
        (options.explain, "--explain"),
        (options.step, "--step"),
        (options.gdb.is_some(), "--gdb"),
    ];
    let chosen: Vec<&str> = views.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
    if chosen.len() > 1 {
        return Err(UsageError(format!(
            "{} and {} are two ways to run: choose one",
            chosen[0], chosen[1]
        )));
    }
    if options.trace && (options.step || options.gdb.is_some()) {
        return usage("--trace does not go with --step or --gdb: --step lists every exit, gdb stops where you ask");
    }
    if options.explain && options.json {
        return usage("--explain prints pictures and --json a report: choose one");
    }
    if options.gdb.is_some() && options.json {
        return usage("--gdb serves gdb and --json prints a report: choose one");
    }
    Ok(())
}

impl Options {
    /// `--max-steps`, or its default.
    pub fn step_limit(&self) -> u64 {
        self.max_steps.unwrap_or(DEFAULT_MAX_STEPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_are_long_mode_and_five_seconds() {
        assert_eq!(parse_str(&[]), Ok(Command::Run(Options::default())));
        assert_eq!(Options::default().mode, Mode::Long);
        assert_eq!(Options::default().timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn every_option_is_read_in_both_spellings() {
        let expected = Options {
            mode: Mode::Real,
            guest: Some("g.bin".into()),
            json: true,
            trace: true,
            timeout: Duration::from_millis(250),
            ..Options::default()
        };
        let split = parse_str(&[
            "--mode",
            "real",
            "--guest",
            "g.bin",
            "--json",
            "--trace",
            "--timeout",
            "0.25",
        ]);
        let joined = parse_str(&["--mode=real", "--guest=g.bin", "--json", "--trace", "--timeout=0.25"]);
        assert_eq!(split, Ok(Command::Run(expected.clone())));
        assert_eq!(joined, Ok(Command::Run(expected)));
    }

    #[test]
    fn bad_input_is_named() {
        let cases: [(&[&str], &str); 14] = [
            (&["--mode", "vm86"], "unknown mode 'vm86'"),
            (&["--mode"], "--mode needs a value"),
            (&["--timeout", "soon"], "got 'soon'"),
            (&["--timeout", "0"], "above 0"),
            (&["--timeout", "-1"], "above 0"),
            (&["--timeout", "NaN"], "above 0"),
            (&["--json", "--json"], "--json is given twice"),
            (&["--mode", "real", "--mode=long"], "--mode is given twice"),
            (&["--json=yes"], "--json takes no value"),
            (&["--frobnicate"], "unknown option '--frobnicate'"),
            (&["guest.bin"], "goes after --guest"),
            (&["--guest="], "--guest needs a file name"),
            (&["--gdb", "0.0.0.0:1234"], "loopback only"),
            (&["--max-steps", "0", "--step"], "above 0"),
        ];
        for (args, needle) in cases {
            let err = parse_str(args).expect_err(needle);
            let text = err.to_string();
            assert!(text.contains(needle), "{args:?}: {text}");
            assert_eq!(text.lines().count(), 1, "{args:?}: one line: {text}");
            assert!(text.ends_with("(see kvm-hello --help)"), "{text}");
        }
    }

    #[test]
    fn explain_takes_a_walk_address_and_an_svg_folder() {
        let Ok(Command::Run(options)) = parse_str(&["--explain", "--walk", "0x1f_ffff", "--svg", "pics"]) else {
            panic!("--explain is accepted");
        };
        assert!(options.explain);
        assert_eq!(options.walk, Some(0x1f_ffff));
        assert_eq!(options.svg, Some(PathBuf::from("pics")));
        let Ok(Command::Run(options)) = parse_str(&["--explain", "--walk=1024"]) else {
            panic!()
        };
        assert_eq!(options.walk, Some(1024));
        for (args, needle) in [
            (&["--walk", "0x400"][..], "go with --explain"),
            (&["--explain", "--json"][..], "choose one"),
            (&["--explain", "--walk", "here"][..], "got 'here'"),
        ] {
            assert!(parse_str(args).unwrap_err().to_string().contains(needle), "{args:?}");
        }
    }

    #[test]
    fn step_and_gdb_are_views_of_their_own() {
        let Ok(Command::Run(options)) = parse_str(&["--step", "--max-steps", "0x10", "--mode", "real"]) else {
            panic!("--step is accepted");
        };
        assert!(options.step);
        assert_eq!(options.step_limit(), 16);
        assert_eq!(Options::default().step_limit(), DEFAULT_MAX_STEPS);
        let Ok(Command::Run(options)) = parse_str(&["--gdb", "127.0.0.1:0"]) else {
            panic!("--gdb is accepted");
        };
        assert_eq!(options.gdb, Some("127.0.0.1:0".parse().unwrap()));
        for (args, needle) in [
            (&["--max-steps", "5"][..], "goes with --step"),
            (&["--step", "--explain"][..], "choose one"),
            (&["--step", "--gdb", "127.0.0.1:0"][..], "choose one"),
            (&["--gdb", "127.0.0.1:0", "--json"][..], "choose one"),
            (&["--gdb", "localhost"][..], "got 'localhost'"),
            (&["--lab", "lwn", "--step"][..], "does not go with --step"),
            (&["--step", "--trace"][..], "--trace does not go with --step"),
        ] {
            assert!(parse_str(args).unwrap_err().to_string().contains(needle), "{args:?}");
        }
    }

    #[test]
    fn extension_labs_are_chosen_by_name_and_set_their_own_mode() {
        let Ok(Command::Run(options)) = parse_str(&["--lab", "hypercalls", "--json"]) else {
            panic!()
        };
        assert_eq!(options.lab, Some(ExtraLab::Hypercalls));
        let Ok(Command::Run(options)) = parse_str(&[
            "--lab",
            "schedule",
            "--policy",
            "weighted",
            "--share",
            "60:40",
            "--quantum-ms",
            "5",
            "--duration-ms=200",
            "--svg",
            "pics",
        ]) else {
            panic!("--lab schedule takes its four options")
        };
        assert_eq!(
            options.schedule,
            ScheduleOptions {
                policy: lab6_scheduling::Policy::Weighted {
                    quantum: Duration::from_millis(5),
                    shares: [60, 40],
                },
                duration: Duration::from_millis(200),
            }
        );
        let Ok(Command::Run(options)) = parse_str(&["--lab", "schedule"]) else {
            panic!()
        };
        assert_eq!(options.schedule, ScheduleOptions::default());
        for (args, needle) in [
            (&["--lab", "lab9"][..], "unknown lab 'lab9'"),
            (&["--policy", "weighted"][..], "--policy goes with --lab schedule"),
            (&["--lab", "schedule", "--policy", "fifo"][..], "unknown policy 'fifo'"),
            (&["--lab", "schedule", "--share", "70:40"][..], "they add up to 110"),
            (
                &["--lab", "schedule", "--share", "70:30"][..],
                "goes with --policy weighted",
            ),
            (
                &["--lab", "schedule", "--policy", "cooperative", "--quantum-ms", "5"][..],
                "does not go with --policy cooperative",
            ),
            (&["--lab", "schedule", "--duration-ms", "0"][..], "from 1 to 600000"),
            (&["--lab", "schedule", "--trace"][..], "does not go with --trace"),
            (
                &["--lab", "schedule", "--guest", "x.bin"][..],
                "does not go with --guest",
            ),
            (&["--lab", "lwn", "--mode", "real"][..], "does not go with --mode"),
            (&["--lab", "lwn", "--guest", "x.bin"][..], "does not go with --guest"),
            (&["--lab", "hypercalls", "--explain"][..], "does not go with --explain"),
        ] {
            assert!(parse_str(args).unwrap_err().to_string().contains(needle), "{args:?}");
        }
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse_str(&["--mode", "real", "--help"]), Ok(Command::Help));
        assert_eq!(parse_str(&["--mode", "vm86", "-h"]), Ok(Command::Help));
        assert_eq!(parse_str(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn the_help_names_every_option_and_the_statuses() {
        let help = help();
        for needle in [
            "Usage: kvm-hello [OPTIONS]",
            "--mode <MODE>",
            "--lab <LAB>",
            "--policy <POLICY>",
            "--quantum-ms <N>",
            "--share <A:B>",
            "--duration-ms <N>",
            "--guest <IMAGE>",
            "--json",
            "--trace",
            "--timeout <SECONDS>",
            "12 x SECONDS",
            "--explain",
            "--walk <GVA>",
            "--svg <DIR>",
            "--step",
            "--max-steps <N>",
            "--gdb <ADDR>",
            "-h, --help",
            "-V, --version",
            "Exit status: 0 ok",
            "SIGPIPE",
        ] {
            assert!(help.contains(needle), "the help names {needle}:\n{help}");
        }
    }
}
