//! The command line: `kvm-hello [--mode MODE] [--guest IMAGE] [--json] [--trace] [--timeout SECONDS]`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kit_common::Mode;

/// The watchdog's default, in CPU time of the vCPU thread: long enough for real mode under an
/// emulating KVM, short enough that a spinning guest gives quick feedback.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `--timeout` accepted: a day.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// The help text.
pub const USAGE: &str = "\
kvm-hello: the KVM lab kit's VMM. Runs a guest in the chosen CPU mode and prints what it
writes to port 0xE9.

Usage: kvm-hello [OPTIONS]

Options:
  --mode MODE        long (default), protected, paged32 or real
  --lab LAB          run an extension lab instead: lwn (lab 0, the LWN warm-up), hypercalls (lab 5)
                     or schedule (lab 6: two VMs on one thread)
  --policy POLICY    with --lab schedule: cooperative, round-robin (default) or weighted
  --quantum-ms N     with --lab schedule: the slice length in milliseconds of guest time (default 10)
  --share A:B        with --lab schedule --policy weighted: the two VMs' shares in percent, adding
                     up to 100 (default 70:30)
  --duration-ms N    with --lab schedule: the two VMs' guest time together, in milliseconds
                     (default 1000)
  --guest IMAGE      a flat image loaded at guest physical 0 (default: the kit's guest for MODE)
  --json             print one JSON report on stdout instead of the guest's output
  --trace            print every exit on stderr
  --timeout SECONDS  stop a guest that has run SECONDS of vCPU (CPU) time without halting
                     (default 5; fractions allowed); a vCPU thread that does not run at all for
                     12 x SECONDS (blocked), or a run that lasts 60 x SECONDS, is stopped too
  --explain          print pictures of the live VM instead of the guest's output: guest physical
                     memory, kvm-hello's virtual memory, the page tables, a page walk, every exit
  --walk GVA         the guest virtual address --explain walks (default 0x400; hex or decimal)
  --svg DIR          with --explain, also write the pictures as SVG files into DIR; with
                     --lab schedule, the picture of the slices (schedule-POLICY.svg)
  -h, --help         print this help
  -V, --version      print the version

Exit status: 0 ok, 1 wrong result, 2 bad usage or input, 3 KVM unavailable, 4 guest fault or
unexpected exit, 5 timeout, 6 a lab stub is not implemented yet, 7 lab code panicked.
A closed stdout or stderr (`| head`) ends kvm-hello quietly by SIGPIPE (shell status 141).
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run a guest.
    Run(Options),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// The options of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The CPU mode.
    pub mode: Mode,
    /// A guest image from a file instead of the kit's own.
    pub guest: Option<PathBuf>,
    /// A JSON report instead of the guest's output.
    pub json: bool,
    /// Every exit on stderr.
    pub trace: bool,
    /// The watchdog's limit.
    pub timeout: Duration,
    /// An extension lab to run instead of kvm-hello-world.
    pub lab: Option<ExtraLab>,
    /// Pictures of the live VM instead of the guest's output.
    pub explain: bool,
    /// The address `--explain` walks.
    pub walk: Option<u64>,
    /// Where `--explain` writes SVG pictures.
    pub svg: Option<PathBuf>,
    pub schedule: ScheduleOptions,
}

/// The options of `--lab schedule` (lab 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// The policy, with its quantum and shares.
    pub policy: lab6_scheduling::Policy,
    /// The two VMs' guest time together.
    pub duration: Duration,
}

/// `--quantum-ms`'s default.
pub const DEFAULT_QUANTUM: Duration = Duration::from_millis(10);
/// `--share`'s default.
pub const DEFAULT_SHARES: [u32; 2] = [70, 30];
/// `--duration-ms`'s default.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(1000);
/// The longest `--quantum-ms` and `--duration-ms`: ten minutes.
pub const MAX_SCHEDULE_MS: u64 = 600_000;

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
            schedule: ScheduleOptions::default(),
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

fn parse_address(text: &str) -> Result<u64, UsageError> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => text.replace('_', "").parse(),
    };
    parsed.map_err(|_| {
        UsageError(format!(
            "--walk takes a guest virtual address such as 0x400 or 1024; got '{text}'"
        ))
    })
}

/// `--quantum-ms` and `--duration-ms`: whole milliseconds, 1 to `MAX_SCHEDULE_MS`.
fn parse_millis(flag: &str, text: &str) -> Result<Duration, UsageError> {
    match text.trim().parse::<u64>() {
        Ok(ms) if (1..=MAX_SCHEDULE_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(UsageError(format!(
            "{flag} takes whole milliseconds from 1 to {MAX_SCHEDULE_MS}; got '{text}'"
        ))),
    }
}

/// `--share A:B`: two whole percentages, each at least 1, adding up to 100.
fn parse_shares(text: &str) -> Result<[u32; 2], UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "--share takes A:B, two percentages adding up to 100 such as 70:30; got '{text}'{why}"
        ))
    };
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
fn schedule_options(
    policy: Option<&str>,
    quantum: Option<Duration>,
    shares: Option<[u32; 2]>,
    duration: Option<Duration>,
) -> Result<ScheduleOptions, UsageError> {
    use lab6_scheduling::Policy;
    let quantum_given = quantum.is_some();
    let quantum = quantum.unwrap_or(DEFAULT_QUANTUM);
    let policy = match policy.unwrap_or("round-robin") {
        "cooperative" => Policy::Cooperative,
        "round-robin" => Policy::RoundRobin { quantum },
        "weighted" => Policy::Weighted {
            quantum,
            shares: shares.unwrap_or(DEFAULT_SHARES),
        },
        other => {
            return Err(UsageError(format!(
                "unknown policy '{other}': expected cooperative, round-robin or weighted"
            )));
        }
    };
    if shares.is_some() && !matches!(policy, Policy::Weighted { .. }) {
        return Err(UsageError("--share goes with --policy weighted".into()));
    }
    if quantum_given && policy == Policy::Cooperative {
        return Err(UsageError(
            "--quantum-ms does not go with --policy cooperative (its slices end at console exits)".into(),
        ));
    }
    Ok(ScheduleOptions {
        policy,
        duration: duration.unwrap_or(DEFAULT_DURATION),
    })
}

fn parse_timeout(text: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "--timeout takes a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}, e.g. 5 or 0.5; got '{text}'"
        ))
    };
    let secs: f64 = text.trim().parse().map_err(|_| bad())?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut options = Options::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut args = args.into_iter();
    let (mut policy, mut quantum, mut shares, mut duration) = (None, None, None, None);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|arg| UsageError(format!("argument {arg:?} is not UTF-8")))?;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let flag: &'static str = match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--mode" => "--mode",
            "--guest" => "--guest",
            "--json" => "--json",
            "--trace" => "--trace",
            "--timeout" => "--timeout",
            "--explain" => "--explain",
            "--walk" => "--walk",
            "--svg" => "--svg",
            "--lab" => "--lab",
            "--policy" => "--policy",
            "--quantum-ms" => "--quantum-ms",
            "--share" => "--share",
            "--duration-ms" => "--duration-ms",
            _ if arg.starts_with('-') => return Err(UsageError(format!("unknown option '{arg}'"))),
            _ => {
                return Err(UsageError(format!(
                    "unexpected argument '{arg}'; a guest image goes after --guest"
                )));
            }
        };
        if seen.contains(&flag) {
            return Err(UsageError(format!("{flag} is given twice")));
        }
        seen.push(flag);
        let takes_value = !matches!(flag, "--json" | "--explain" | "--trace");
        if !takes_value {
            if inline.is_some() {
                return Err(UsageError(format!("{flag} takes no value")));
            }
            match flag {
                "--json" => options.json = true,
                "--explain" => options.explain = true,
                _ => options.trace = true,
            }
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => match args.next() {
                Some(value) => value
                    .into_string()
                    .map_err(|v| UsageError(format!("{flag} value {v:?} is not UTF-8")))?,
                None => return Err(UsageError(format!("{flag} needs a value"))),
            },
        };
        match flag {
            "--mode" => {
                options.mode = value
                    .parse()
                    .map_err(|err: kit_common::UnknownMode| UsageError(err.to_string()))?
            }
            "--guest" if value.is_empty() => {
                return Err(UsageError("--guest needs a file name".into()));
            }
            "--guest" => options.guest = Some(PathBuf::from(value)),
            "--walk" => options.walk = Some(parse_address(&value)?),
            "--lab" => {
                options.lab = Some(match value.as_str() {
                    "lwn" => ExtraLab::Lwn,
                    "hypercalls" => ExtraLab::Hypercalls,
                    "schedule" => ExtraLab::Schedule,
                    other => {
                        return Err(UsageError(format!(
                            "unknown lab '{other}': expected lwn, hypercalls or schedule"
                        )));
                    }
                })
            }
            "--svg" if value.is_empty() => return Err(UsageError("--svg needs a folder".into())),
            "--svg" => options.svg = Some(PathBuf::from(value)),
            "--policy" => policy = Some(value),
            "--quantum-ms" => quantum = Some(parse_millis(flag, &value)?),
            "--share" => shares = Some(parse_shares(&value)?),
            "--duration-ms" => duration = Some(parse_millis(flag, &value)?),
            _ => options.timeout = parse_timeout(&value)?,
        }
    }
    let svg_of_schedule = options.lab == Some(ExtraLab::Schedule) && options.walk.is_none();
    if (options.walk.is_some() || options.svg.is_some()) && !options.explain && !svg_of_schedule {
        return Err(UsageError(
            "--walk and --svg go with --explain (--svg also with --lab schedule)".into(),
        ));
    }
    let schedule_flags = ["--policy", "--quantum-ms", "--share", "--duration-ms"];
    if let Some(flag) = schedule_flags.iter().find(|flag| seen.contains(flag))
        && options.lab != Some(ExtraLab::Schedule)
    {
        return Err(UsageError(format!("{flag} goes with --lab schedule")));
    }
    if options.lab == Some(ExtraLab::Schedule) {
        options.schedule = schedule_options(policy.as_deref(), quantum, shares, duration)?;
    }
    if let Some(lab) = options.lab {
        let conflict = if seen.contains(&"--mode") {
            Some("--mode (an extension lab sets its own mode)")
        } else if options.explain {
            Some("--explain")
        } else if lab == ExtraLab::Lwn && options.guest.is_some() {
            Some("--guest (lab 0 runs the LWN code)")
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
    if options.explain && options.json {
        return Err(UsageError(
            "--explain prints pictures and --json a report: choose one".into(),
        ));
    }
    Ok(Command::Run(options))
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
        let cases: [(&[&str], &str); 9] = [
            (&["--mode", "vm86"], "unknown mode 'vm86'"),
            (&["--mode"], "--mode needs a value"),
            (&["--timeout", "soon"], "got 'soon'"),
            (&["--timeout", "0"], "above 0"),
            (&["--timeout", "-1"], "above 0"),
            (&["--timeout", "NaN"], "above 0"),
            (&["--json", "--json"], "--json is given twice"),
            (&["--frobnicate"], "unknown option '--frobnicate'"),
            (&["guest.bin"], "goes after --guest"),
        ];
        for (args, needle) in cases {
            let err = parse_str(args).expect_err(needle);
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
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
    fn extension_labs_are_chosen_by_name_and_set_their_own_mode() {
        let Ok(Command::Run(options)) = parse_str(&["--lab", "hypercalls", "--json"]) else {
            panic!()
        };
        assert_eq!(options.lab, Some(ExtraLab::Hypercalls));
        for (args, needle) in [
            (&["--lab", "lab9"][..], "unknown lab 'lab9'"),
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
        assert_eq!(parse_str(&["-V"]), Ok(Command::Version));
    }
}
