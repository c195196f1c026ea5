//! `cargo grade` (`cargo xtask grade`): builds the grader and runs it, with partial credit across
//! compile errors. This crate links no lab, so it builds whatever state the lab files are in.
//! When a lab file does not compile, the grader is built in a shadow copy of the kit (under
//! `target/grade-shadow/`) with that lab's untouched stub in its place, and the grader reports
//! that lab's checks as "does not compile" with the compiler's first error; the checks that need
//! the lab are blocked as usual, and every other lab is graded.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::kit::{self, LABS, status};
use crate::watch;

/// The environment variable, suffixed with a lab's number, that tells the grader a lab file does
/// not compile (its value: the compiler's first error). Read by `grader::runner`.
pub const DOES_NOT_COMPILE_ENV: &str = "KIT_DOES_NOT_COMPILE_LAB";
/// Where the shadow copy and its build live, under the kit's `target/`.
const SHADOW_DIR: &str = "grade-shadow";
/// At most this many warnings about the lab files are shown before the scoreboard.
const MAX_WARNINGS: usize = 10;
/// At most this many rounds of "stub out the labs that fail, build again" (one per lab, and one more).
const MAX_ROUNDS: usize = LABS.len() + 1;

/// `cargo grade [ARGS...]`: the grader's own arguments, passed through (`cargo grade --help` is
/// the grader's help).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Grade each lab file when it is saved, until Ctrl-C (rustlings' watch mode).
    #[arg(long)]
    watch: bool,
    /// The grader's arguments: lab0 … lab7, e2e, a check's name, --json, --gradescope FILE, …
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    grader_args: Vec<String>,
}

/// What one `cargo build` of the grader gave.
#[derive(Debug, Default)]
struct Build {
    /// The grader binary (the judge), when it was built.
    grader: Option<PathBuf>,
    /// The probe binary (the labs), when it was built.
    probe: Option<PathBuf>,
    /// The first error of each lab crate that did not compile.
    broken_labs: BTreeMap<u8, String>,
    /// Errors outside the lab crates, and cargo's own.
    other_errors: Vec<String>,
    /// The compiler's warnings about the lab files (`file:line:col: warning: …`).
    lab_warnings: Vec<String>,
}

/// What to build, and how.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// `--features` of the build.
    pub features: &'a str,
    /// Only the probe (official grading brings its own judge).
    pub probe_only: bool,
    /// Run cargo jailed, with this folder (the submission's copy of the kit, which holds the
    /// shadow too) its only one (official grading: a build sees nothing else).
    pub jail: Option<(&'a CargoJail, &'a Path)>,
    /// When a build is stopped, with everything it started.
    pub deadline: Option<Instant>,
}

impl Plan<'_> {
    /// What the build must have produced to be usable.
    fn built(&self, build: &Build) -> bool {
        build.probe.is_some() && (self.probe_only || build.grader.is_some())
    }
}

/// cargo in a jail (kit-jail): the toolchain and cargo's home read-only, offline, and the one kit
/// being built as the only writable folder.
#[derive(Debug, Clone)]
pub struct CargoJail {
    jail: kit_jail::Jail,
    cargo: PathBuf,
    cargo_home: PathBuf,
    rustup_home: PathBuf,
}

impl CargoJail {
    /// This host's cargo, jailed; `Err` says why it cannot be.
    #[allow(dead_code)] // official grading's (grade-submissions), which a student copy leaves out
    pub fn detect() -> Result<CargoJail, String> {
        let jail = kit_jail::Jail::detect().map_err(|why| why.to_string())?;
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let dir = |var: &str, default: &str| std::env::var_os(var).map_or_else(|| home.join(default), PathBuf::from);
        let cargo = PathBuf::from(kit::cargo());
        let cargo = if cargo.is_absolute() {
            cargo
        } else {
            dir("CARGO_HOME", ".cargo").join("bin/cargo")
        };
        Ok(CargoJail {
            jail,
            cargo,
            cargo_home: dir("CARGO_HOME", ".cargo"),
            rustup_home: dir("RUSTUP_HOME", ".rustup"),
        })
    }

    /// `command` (a cargo command run in `kit`) run jailed, with `kit` its only writable folder.
    fn wrap(&self, command: &Command, kit: &Path) -> Result<Command, String> {
        let tools = self.cargo.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = format!(
            "{}:{}/bin:{}",
            tools.display(),
            self.cargo_home.display(),
            kit_jail::JAIL_PATH
        );
        let mut builder = self
            .jail
            .command(&self.cargo)
            .args(command.get_args())
            .arg("--offline")
            .read_only(&self.cargo_home)
            .scratch(kit)
            .env("CARGO_HOME", &self.cargo_home)
            .env("PATH", path);
        if self.rustup_home.is_dir() {
            builder = builder
                .read_only(&self.rustup_home)
                .env("RUSTUP_HOME", &self.rustup_home);
        }
        if !self.cargo.starts_with(&self.cargo_home) && !self.cargo.starts_with(&self.rustup_home) {
            builder = builder.read_only(&tools);
        }
        builder.build().map_err(|err| err.to_string())
    }
}

/// The probe of a submission's kit, built jailed for official grading, with partial credit
/// across lab files that do not compile: the probe, the labs stubbed out with their first error,
/// and the warnings about the lab files.
#[allow(dead_code)] // official grading's (grade-submissions), which a student copy leaves out
pub fn build_probe_for_grading(
    kit: &Path,
    jail: &CargoJail,
    deadline: Instant,
) -> Result<(PathBuf, BTreeMap<u8, String>), String> {
    let plan = Plan {
        features: "grader/probe",
        probe_only: true,
        jail: Some((jail, kit)),
        deadline: Some(deadline),
    };
    let (build, broken, _) = build_around_broken_labs(kit, plan)?;
    match build.probe {
        Some(probe) => Ok((probe, broken)),
        None => Err(format!(
            "the kit does not build, outside the lab files: {}",
            build.other_errors.first().map_or("cargo build failed", String::as_str)
        )),
    }
}

/// The judge of the kit at `root` (the `grader` binary: no lab code, so no lab file can stop
/// its build), built once for a whole class.
#[allow(dead_code)] // official grading's (grade-submissions), which a student copy leaves out
pub fn build_judge(root: &Path) -> Result<PathBuf, String> {
    let out = Command::new(kit::cargo())
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--message-format=json",
            "-p",
            "grader",
            "--bin",
            "grader",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    let build = parse_build_messages(&String::from_utf8_lossy(&out.stdout));
    match build.grader {
        Some(judge) if out.status.success() => Ok(judge),
        _ => Err(format!(
            "the grader (the judge) does not build: {}",
            build.other_errors.first().map_or("cargo build failed", String::as_str)
        )),
    }
}

/// `cargo grade --solution`: grade the reference solutions (the instructors' repository only).
const SOLUTION_ARG: &str = "--solution";

/// The grader, built around the lab files that do not compile, ready to run.
#[derive(Debug)]
pub struct Prepared {
    grader: PathBuf,
    /// The root of the kit that was built (the shadow copy when a lab file does not compile).
    grader_root: PathBuf,
    /// The labs stubbed out, with the compiler's first error.
    pub broken: BTreeMap<u8, String>,
    /// The compiler's warnings about the lab files.
    pub lab_warnings: Vec<String>,
}

impl Prepared {
    /// The grader with `args`, told which lab files do not compile.
    pub fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.grader);
        command.args(args).current_dir(&self.grader_root);
        for (number, error) in &self.broken {
            command.env(format!("{DOES_NOT_COMPILE_ENV}{number}"), error);
        }
        command
    }
}

/// The plan of `cargo grade`: the judge and the probe, of the labs or (`--solution`) of the references.
pub fn local_plan(solution: bool) -> Plan<'static> {
    Plan {
        features: if solution {
            "grader/probe grader/solution"
        } else {
            "grader/probe"
        },
        probe_only: false,
        jail: None,
        deadline: None,
    }
}

/// Builds the grader (the judge and the probe) of the kit at `root` around the lab files that do
/// not compile. Fails with an exit status and a message for the user when the kit does not build
/// outside the lab files.
pub fn prepare(root: &Path, plan: Plan) -> Result<Prepared, (u8, String)> {
    let (build, broken, grader_root) = build_around_broken_labs(root, plan).map_err(|message| (status::IO, message))?;
    let Some(grader) = build.grader.filter(|_| build.probe.is_some()) else {
        let mut message = String::from("the kit does not build, outside your lab files:");
        for error in build.other_errors.iter().take(3) {
            message.push_str("\n  ");
            message.push_str(error);
        }
        message.push_str("\n(restore any file you changed outside labs/*/src/lib.rs, e.g. with git checkout)");
        return Err((status::KIT_BROKEN, message));
    };
    Ok(Prepared {
        grader,
        grader_root,
        broken,
        lab_warnings: build.lab_warnings,
    })
}

/// What `cargo grade` says about a lab file that does not compile.
pub fn does_not_compile(number: u8, error: &str) -> String {
    let file = LABS
        .iter()
        .find(|lab| lab.number == number)
        .map(|lab| lab.file())
        .unwrap_or_default();
    format!(
        "{file} does not compile, so lab {number}'s checks score 0 and those that need it are blocked; \
         every other lab is graded with its untouched stub in its place. First error: {error}"
    )
}

pub fn run(mut args: Args) -> u8 {
    let root = kit::root();
    // `cargo grade lab2 --watch` too: the grader's arguments swallow a late --watch.
    if args.watch || args.grader_args.iter().any(|arg| arg == "--watch") {
        if args.grader_args.iter().any(|arg| arg != "--watch") {
            return fail(
                status::USAGE,
                "--watch takes no other argument: it grades the lab whose file you save (cargo grade --watch)",
            );
        }
        return watch::run(&root);
    }
    let solution = args.grader_args.iter().any(|arg| arg == SOLUTION_ARG);
    args.grader_args.retain(|arg| arg != SOLUTION_ARG);
    if solution && !root.join("labs/lab1-memory/src/solution.rs").is_file() {
        return fail(
            status::USAGE,
            "--solution grades the reference solutions, which only the instructors' repository has",
        );
    }
    let prepared = match prepare(&root, local_plan(solution)) {
        Ok(prepared) => prepared,
        Err((code, message)) => return fail(code, &message),
    };
    show_warnings(&prepared.lab_warnings);
    for (number, error) in &prepared.broken {
        eprintln!("cargo grade: {}", does_not_compile(*number, error));
    }
    match prepared.command(&args.grader_args).status() {
        Ok(exit) => exit.code().map_or(status::IO, |code| code as u8),
        Err(err) => fail(status::IO, &format!("cannot run the grader: {err}")),
    }
}

/// Builds the grader; when lab files do not compile, builds it in the shadow copy with their
/// untouched stubs instead. Returns the last build, the labs stubbed out with their first error,
/// and the root of the kit that was built.
fn build_around_broken_labs(root: &Path, plan: Plan) -> Result<(Build, BTreeMap<u8, String>, PathBuf), String> {
    let mut build = build_grader(root, &root.join("target"), plan)?;
    let mut broken = build.broken_labs.clone();
    if plan.built(&build) || broken.is_empty() || !build.other_errors.is_empty() {
        return Ok((build, broken, root.to_path_buf()));
    }
    // Stub out the labs that fail, build again, until the kit builds (a lab that uses a broken
    // one may only fail once that one is stubbed out, or the kit's own code may name a lab).
    for _ in 0..MAX_ROUNDS {
        build = build_shadow(root, &broken, plan)?;
        if plan.built(&build) || !build.other_errors.is_empty() {
            break;
        }
        if build.broken_labs.keys().all(|lab| broken.contains_key(lab)) {
            // A stub of ours does not compile with the rest: nothing more to take out.
            build.other_errors.extend(build.broken_labs.values().cloned());
            break;
        }
        for (lab, error) in &build.broken_labs {
            broken.entry(*lab).or_insert_with(|| error.clone());
        }
    }
    // A lab may have failed only because a lab it uses changed (lab 5 calls lab 2): give each its
    // own file back, one at a time, and keep it wherever the kit still builds.
    if plan.built(&build) && broken.len() > 1 {
        let mut last_trial_built = true;
        for lab in broken.keys().copied().collect::<Vec<_>>() {
            let mut trial = broken.clone();
            trial.remove(&lab);
            let trial_build = build_shadow(root, &trial, plan)?;
            last_trial_built = plan.built(&trial_build);
            if last_trial_built {
                (build, broken) = (trial_build, trial);
            }
        }
        if !last_trial_built {
            build = build_shadow(root, &broken, plan)?;
        }
    }
    Ok((build, broken, shadow_root(root)))
}

fn shadow_root(root: &Path) -> PathBuf {
    root.join("target").join(SHADOW_DIR).join("kit")
}

/// Builds the grader in the shadow copy, with `broken` labs stubbed out.
fn build_shadow(root: &Path, broken: &BTreeMap<u8, String>, plan: Plan) -> Result<Build, String> {
    prepare_shadow(root, &shadow_root(root), broken)?;
    // The shadow lies inside `root`, so a jailed build still writes only there.
    build_grader(
        &shadow_root(root),
        &root.join("target").join(SHADOW_DIR).join("target"),
        plan,
    )
}

/// The compiler's warnings about the lab files, as `cargo build` would show them, short.
fn show_warnings(warnings: &[String]) {
    for warning in warnings.iter().take(MAX_WARNINGS) {
        eprintln!("{warning}");
    }
    if warnings.len() > MAX_WARNINGS {
        eprintln!(
            "cargo grade: {} more warnings about your lab files (cargo build -p kvm-hello shows them all)",
            warnings.len() - MAX_WARNINGS
        );
    }
}

fn fail(code: u8, message: &str) -> u8 {
    eprintln!("cargo grade: {message}");
    code
}

/// Builds the grader of the kit at `root` into `target`, going on past crates that fail, and
/// sorts the errors by lab.
fn build_grader(root: &Path, target: &Path, plan: Plan) -> Result<Build, String> {
    let mut command = Command::new(kit::cargo());
    command
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--keep-going",
            "--message-format=json-diagnostic-short",
            "-p",
            "grader",
            // The judge links no lab code; the probe is the labs.
            "--features",
            plan.features,
        ])
        .arg("--target-dir")
        .arg(target);
    if plan.probe_only {
        command.args(["--bin", "grader-probe"]);
    }
    if let Some((jail, kit)) = plan.jail {
        // The jail starts in `kit`; `root` may be the shadow inside it.
        command.arg("--manifest-path").arg(root.join("Cargo.toml"));
        command = jail.wrap(&command, kit)?;
    }
    let out = output_until(command, plan.deadline)?;
    let mut build = parse_build_messages(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() && build.broken_labs.is_empty() && build.other_errors.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .find(|line| line.starts_with("error"))
            .unwrap_or("cargo build failed");
        build.other_errors.push(first.to_owned());
    }
    if !out.status.success() {
        build.grader = None;
        build.probe = None;
    }
    Ok(build)
}

/// `command`'s output, or an error once `deadline` passes (the command and all it started, in
/// its process group, are killed then).
fn output_until(mut command: Command, deadline: Option<Instant>) -> Result<std::process::Output, String> {
    let Some(deadline) = deadline else {
        return command
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run cargo: {err}"));
    };
    let mut ours = kit::own_children().lock().unwrap_or_else(|e| e.into_inner());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    let pid = child.id() as libc::pid_t;
    ours.insert(pid);
    drop(ours);
    let forget = || {
        kit::own_children()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    };
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut read = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut read);
            }
            read
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|err| format!("cannot wait for cargo: {err}"))?
        {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let Some(status) = status else {
        // SAFETY: kill(2) on our child's process group; no memory is touched.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
        forget();
        return Err("the build took too long and was stopped".to_owned());
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads cargo's JSON messages: the grader's executable, and the first error of each crate.
fn parse_build_messages(stdout: &str) -> Build {
    let mut build = Build::default();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match message["reason"].as_str() {
            Some("compiler-artifact") if message["target"]["name"] == "grader" => {
                if let Some(exe) = message["executable"].as_str() {
                    build.grader = Some(PathBuf::from(exe));
                }
            }
            Some("compiler-artifact") if message["target"]["name"] == "grader-probe" => {
                if let Some(exe) = message["executable"].as_str() {
                    build.probe = Some(PathBuf::from(exe));
                }
            }
            Some("compiler-message")
                if message["message"]["level"] == "warning"
                    && LABS
                        .iter()
                        .any(|lab| message["target"]["name"] == lab.target_name().as_str()) =>
            {
                let rendered = message["message"]["rendered"].as_str().unwrap_or_default().trim();
                // The summary ("`lab1-memory` (lib) generated 2 warnings") has no place in a file.
                if !message["message"]["spans"].as_array().is_some_and(Vec::is_empty) {
                    let first_line = rendered.lines().next().unwrap_or_default().to_owned();
                    if !build.lab_warnings.contains(&first_line) {
                        build.lab_warnings.push(first_line);
                    }
                }
            }
            Some("compiler-message") if message["message"]["level"] == "error" => {
                let rendered = message["message"]["rendered"].as_str().unwrap_or_default().trim();
                let first_line = rendered.lines().next().unwrap_or_default().to_owned();
                let target = message["target"]["name"].as_str().unwrap_or_default();
                // An error in the kit's own code that names a lab's item (`lab3_registers::…`)
                // means that lab file no longer fits the kit, e.g. a changed signature.
                let misfit = || {
                    LABS.iter()
                        .find(|lab| line.contains(&format!("{}::", lab.target_name())))
                };
                match LABS.iter().find(|lab| lab.target_name() == target) {
                    Some(lab) => {
                        build.broken_labs.entry(lab.number).or_insert(first_line);
                    }
                    None => match misfit() {
                        Some(lab) => {
                            build.broken_labs.entry(lab.number).or_insert(format!(
                                "{first_line}: {} does not fit the kit (did you change a signature or a type the kit uses?)",
                                lab.file()
                            ));
                        }
                        None => build.other_errors.push(format!("{target}: {first_line}")),
                    },
                }
            }
            _ => {}
        }
    }
    build
}

/// Copies the kit at `root` to `shadow` (files that did not change are left alone, so the shadow
/// build stays incremental), with each broken lab's untouched stub in place of its file.
fn prepare_shadow(root: &Path, shadow: &Path, broken: &BTreeMap<u8, String>) -> Result<(), String> {
    let mut files = Vec::new();
    for relative in kit::files(root).map_err(|err| kit::io_error("list the files of", root, err))? {
        if relative.starts_with("book") {
            continue;
        }
        let lab = LABS.iter().find(|lab| Path::new(&lab.file()) == relative);
        let contents = match lab.filter(|lab| broken.contains_key(&lab.number)) {
            // The lab file does not compile: only a copy elsewhere is untouched.
            Some(lab) => kit::pristine_stub(root, *lab, false)?.into_bytes(),
            None => {
                let from = root.join(&relative);
                std::fs::read(&from).map_err(|err| kit::io_error("read", &from, err))?
            }
        };
        files.push((relative, contents));
    }
    kit::sync_tree(shadow, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_lab_and_the_grader_is_found() {
        let stdout = r#"{"reason":"compiler-message","target":{"name":"lab3_registers"},"message":{"level":"error","rendered":"labs/lab3-registers/src/lib.rs:9:1: error: expected item, found `}`\n"}}
{"reason":"compiler-message","target":{"name":"lab3_registers"},"message":{"level":"error","rendered":"second"}}
{"reason":"compiler-message","target":{"name":"lab1_memory"},"message":{"level":"warning","rendered":"labs/lab1-memory/src/lib.rs:3:9: warning: unused variable: `x`\n","spans":[{}]}}
{"reason":"compiler-message","target":{"name":"lab1_memory"},"message":{"level":"warning","rendered":"warning: 1 warning emitted","spans":[]}}
{"reason":"compiler-message","target":{"name":"kvm_hello"},"message":{"level":"warning","rendered":"not a lab's","spans":[{}]}}
{"reason":"compiler-message","target":{"name":"grader"},"message":{"level":"error","rendered":"grader/src/lib.rs:1:1: error: x"}}
{"reason":"compiler-message","target":{"name":"kvm_hello"},"message":{"level":"error","rendered":"crates/kvm-hello/src/labs.rs:80:5: error[E0308]: mismatched types","children":[{"message":"found fn item `{lab2_paging::translate}`"}]}}
{"reason":"compiler-artifact","target":{"name":"grader"},"executable":"/t/debug/grader"}
not json"#;
        let build = parse_build_messages(stdout);
        assert_eq!(build.grader, Some(PathBuf::from("/t/debug/grader")));
        assert_eq!(
            build.broken_labs,
            BTreeMap::from([
                (
                    2,
                    "crates/kvm-hello/src/labs.rs:80:5: error[E0308]: mismatched types: labs/lab2-paging/src/lib.rs \
                     does not fit the kit (did you change a signature or a type the kit uses?)"
                        .to_owned()
                ),
                (
                    3,
                    "labs/lab3-registers/src/lib.rs:9:1: error: expected item, found `}`".to_owned()
                ),
            ])
        );
        assert_eq!(build.other_errors, ["grader: grader/src/lib.rs:1:1: error: x"]);
        assert_eq!(
            build.lab_warnings,
            ["labs/lab1-memory/src/lib.rs:3:9: warning: unused variable: `x`"]
        );
    }
}
