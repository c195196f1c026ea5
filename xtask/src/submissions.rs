//! `cargo xtask grade-submissions DIR --csv FILE [--jobs N]`: grades a class. `DIR` holds one
//! folder per student (a clone of their repository, or just their lab files). For each student
//! only the lab files are taken, into a pristine student copy of the kit exported afresh from
//! this repository. There the student's probe (`grader-probe`: the labs) is built in a jail
//! (kit-jail: the copy is the only folder it sees and writes; no network; cargo offline), with
//! partial credit across lab files that do not compile. Then the judge, built once from this
//! repository (hidden checks included, no lab code in it), grades it: every request of every
//! check runs in a fresh jailed probe, and the judge writes its report to a file that only it
//! holds. A student whose grading ends otherwise (no jail, the judge failing) gets no grade:
//! "error" in the CSV, with why. Each student gets a text and a JSON report and one CSV row.
//! Students are graded `--jobs` at a time, each job in its own copy of the kit with its own build;
//! each build and grading runs in its own process group and, where the machine allows, its own
//! pids cgroup, under a wall-clock limit, and everything left of it is killed before the next
//! student uses the copy.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::grade::{self, CargoJail, DOES_NOT_COMPILE_ENV};
use crate::kit::{self, LABS, Lab};
use crate::student_kit;

/// Bad usage: `DIR` is not a folder of folders.
const STATUS_USAGE: u8 = 2;
/// This host cannot jail lab code (or its build), so it gives no official grade.
const STATUS_NO_JAIL: u8 = 6;
/// The parts of the scoreboard, in the CSV's column order.
const PARTS: [&str; 8] = ["lab1", "lab2", "lab3", "lab4", "e2e", "lab0", "lab5", "lab6"];
/// Where the pristine kit and the jobs' copies live, under this repository's `target/`.
const WORK_DIR: &str = "grade-submissions";
/// At most this many processes (threads included) per student: a fork loop stops there, and a
/// build of the kit (cargo, rustc and their threads) stays well below.
const PIDS_MAX: u32 = 4096;
/// How often a running grading is looked at.
const POLL: Duration = Duration::from_millis(50);

/// `cargo xtask grade-submissions DIR --csv FILE [--jobs N]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One folder per student: a clone of their repository, or their `labs/*/src/lib.rs` files.
    dir: PathBuf,
    /// The gradebook to write: one row per student.
    #[arg(long)]
    csv: PathBuf,
    /// How many students to grade at once (check limits count CPU time, so scores do not depend on it).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Where to write each student's text and JSON report (default: next to the CSV, FILE-reports/).
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Wall-clock limit for one student's build and grading, in seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
}

/// A student's folder and what was found in it.
#[derive(Debug, Clone)]
struct Submission {
    name: String,
    /// The lab files found, by lab folder.
    files: BTreeMap<&'static str, PathBuf>,
}

/// One student's grade.
#[derive(Debug)]
struct Graded {
    name: String,
    points: BTreeMap<String, u64>,
    total: u64,
    max: u64,
    not_run: usize,
    /// Empty when grading went through; else why there is no score.
    error: String,
    results: Vec<Value>,
    missing: Vec<String>,
    notes: String,
    seconds: f64,
}

pub fn run(args: Args) -> u8 {
    match grade_all(&args) {
        Ok(()) => 0,
        Err((status, message)) => {
            eprintln!("grade-submissions: {message}");
            status
        }
    }
}

type Failure = (u8, String);

fn grade_all(args: &Args) -> Result<(), Failure> {
    let submissions = find_submissions(&args.dir)?;
    if submissions.is_empty() {
        return Err((STATUS_USAGE, format!("{} holds no student folder", args.dir.display())));
    }
    let reports = args.reports.clone().unwrap_or_else(|| {
        let stem = args
            .csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.csv.with_file_name(format!("{stem}-reports"))
    });
    std::fs::create_dir_all(&reports).map_err(|err| (kit::status::IO, kit::io_error("create", &reports, err)))?;
    let jail = CargoJail::detect().map_err(|why| {
        (
            STATUS_NO_JAIL,
            format!("official grades need lab code jailed, and here it cannot be: {why}"),
        )
    })?;
    let root = kit::root();
    let judge = grade::build_judge(&root).map_err(|message| (kit::status::KIT_BROKEN, message))?;
    let work = root.join("target").join(WORK_DIR);
    let pristine = work.join("kit");
    let _ = std::fs::remove_dir_all(&pristine);
    student_kit::export(&root, &pristine, false)?;
    let jobs = args.jobs.max(1).min(submissions.len());
    eprintln!(
        "grade-submissions: {} students, {jobs} at a time, in copies of a fresh student kit under {}",
        submissions.len(),
        work.display()
    );
    static STOP_REAPING: AtomicBool = AtomicBool::new(false);
    start_reaping_orphans(&STOP_REAPING);
    let queue = Arc::new(Mutex::new(submissions.iter().cloned().collect::<VecDeque<_>>()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let total = submissions.len();
    let limit = Duration::from_secs(args.timeout);
    std::thread::scope(|scope| {
        for job in 0..jobs {
            let (queue, done, pristine) = (Arc::clone(&queue), Arc::clone(&done), pristine.clone());
            let (judge, jail) = (&judge, &jail);
            let slot = work.join(format!("job-{job}"));
            scope.spawn(move || {
                loop {
                    let Some(submission) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let graded = grade_one(&pristine, &slot, &submission, limit, judge, jail);
                    let mut done = done.lock().unwrap();
                    done.push(graded);
                    let graded = done.last().unwrap();
                    let outcome = if graded.error.is_empty() {
                        format!("{}/{}", graded.total, graded.max)
                    } else {
                        graded.error.clone()
                    };
                    eprintln!(
                        "[{}/{total}] {}: {outcome} in {:.0} s ({:.0} s so far)",
                        done.len(),
                        graded.name,
                        graded.seconds,
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    STOP_REAPING.store(true, Ordering::Relaxed);
    let mut graded = Arc::try_unwrap(done)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default();
    graded.sort_by(|a, b| a.name.cmp(&b.name));
    for student in &graded {
        write_reports(&reports, student)?;
    }
    let csv = csv(&graded);
    std::fs::write(&args.csv, csv).map_err(|err| (kit::status::IO, kit::io_error("write", &args.csv, err)))?;
    eprintln!(
        "grade-submissions: wrote {} and {} reports in {} ({:.0} s in all)",
        args.csv.display(),
        graded.len(),
        reports.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The student folders of `dir`, sorted, each with the lab files it holds.
fn find_submissions(dir: &Path) -> Result<Vec<Submission>, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|err| (STATUS_USAGE, kit::io_error("read", dir, err)))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let files = LABS
            .iter()
            .filter_map(|lab| lab_file_in(&path, *lab).map(|file| (lab.dir, file)))
            .collect();
        found.push(Submission { name, files });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Where a student folder keeps `lab`'s file: as in the kit, or in a lab folder, or flat.
fn lab_file_in(student: &Path, lab: Lab) -> Option<PathBuf> {
    [
        student.join(lab.file()),
        student.join(lab.dir).join("src/lib.rs"),
        student.join(lab.dir).join("lib.rs"),
        student.join(format!("{}.rs", lab.dir)),
    ]
    .into_iter()
    .find(|path| path.is_file())
}

/// Grades one student in the job's copy of the kit.
fn grade_one(
    pristine: &Path,
    slot: &Path,
    submission: &Submission,
    limit: Duration,
    judge: &Path,
    jail: &CargoJail,
) -> Graded {
    let started = Instant::now();
    let mut graded = Graded {
        name: submission.name.clone(),
        points: BTreeMap::new(),
        total: 0,
        max: 0,
        not_run: 0,
        error: String::new(),
        results: Vec::new(),
        missing: Vec::new(),
        notes: String::new(),
        seconds: 0.0,
    };
    match prepare_slot(pristine, slot, submission, &mut graded.missing)
        .and_then(|()| build_and_judge(slot, limit, judge, jail))
    {
        Ok((results, notes)) => {
            graded.results = results;
            graded.notes = notes;
        }
        Err(message) => graded.error = message,
    }
    score(&mut graded);
    graded.seconds = started.elapsed().as_secs_f64();
    graded
}

/// Builds the student's probe in `slot`, jailed, then has the judge grade it; returns the
/// judge's report (every check's outcome) and notes on lab files that do not compile.
fn build_and_judge(
    slot: &Path,
    limit: Duration,
    judge: &Path,
    jail: &CargoJail,
) -> Result<(Vec<Value>, String), String> {
    let deadline = Instant::now() + limit;
    let (probe, broken) = grade::build_probe_for_grading(slot, jail, deadline)?;
    let notes: Vec<String> = broken
        .iter()
        .map(|(lab, error)| format!("lab {lab} does not compile: {error}"))
        .collect();
    // The report: a new file in a folder of the judge's, outside the slot and out of the jail's view.
    let reports = slot.with_extension("report");
    let _ = std::fs::remove_dir_all(&reports);
    std::fs::create_dir_all(&reports).map_err(|err| kit::io_error("create", &reports, err))?;
    let report = reports.join("report.json");
    let mut command = Command::new(judge);
    command
        .arg("--probe")
        .arg(&probe)
        .arg("--report")
        .arg(&report)
        .args(["--json", "--require-jail"]);
    for (lab, error) in &broken {
        command.env(format!("{DOES_NOT_COMPILE_ENV}{lab}"), error);
    }
    let (status, _stdout, stderr) = run_contained(command, deadline.saturating_duration_since(Instant::now()))?;
    if status != Some(0) {
        let why = stderr
            .lines()
            .rev()
            .find(|line| line.starts_with("grader:"))
            .unwrap_or("no line on stderr")
            .to_owned();
        return Err(format!(
            "the grader exited with {}: {why}",
            status.map_or("a signal".to_owned(), |code| format!("status {code}"))
        ));
    }
    let text = std::fs::read_to_string(&report).map_err(|err| kit::io_error("read", &report, err))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(results)) => Ok((results, notes.join("\n"))),
        _ => Err("the grader's report is not its JSON".to_owned()),
    }
}

fn prepare_slot(
    pristine: &Path,
    slot: &Path,
    submission: &Submission,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    let mut files = Vec::new();
    for relative in kit::files(pristine).map_err(|err| kit::io_error("list", pristine, err))? {
        let lab = LABS.iter().find(|lab| Path::new(&lab.file()) == relative);
        let from = match lab {
            Some(lab) => submission.files.get(lab.dir).cloned().unwrap_or_else(|| {
                missing.push(lab.file());
                pristine.join(&relative)
            }),
            None => pristine.join(&relative),
        };
        let contents = std::fs::read(&from).map_err(|err| kit::io_error("read", &from, err))?;
        files.push((relative, contents));
    }
    kit::sync_tree(slot, &files)
}

/// A pids cgroup for one grading, where the machine lets us make one (root, cgroup v1 or v2).
#[derive(Debug)]
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    fn create(name: &str) -> Option<PidsCgroup> {
        let v1 = PathBuf::from("/sys/fs/cgroup/pids");
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let v2_has_pids = std::fs::read_to_string(v2.join("cgroup.subtree_control")).is_ok_and(|c| c.contains("pids"));
        let base = if v1.join("cgroup.procs").is_file() {
            v1
        } else if v2_has_pids {
            v2
        } else {
            return None;
        };
        let dir = base.join(name);
        let _ = std::fs::create_dir(&dir);
        std::fs::write(dir.join("pids.max"), PIDS_MAX.to_string()).ok()?;
        Some(PidsCgroup(dir))
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the cgroup until none is left.
    fn kill_all(&self) {
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) sends a signal to a process of this grading; no memory is touched.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `command` in its own process group and pids cgroup, killed with all it started at
/// `limit`. Returns its exit status (`None`: a signal), stdout and stderr.
fn run_contained(command: Command, limit: Duration) -> Result<(Option<i32>, String, String), String> {
    // One cgroup per grading: nothing of a student's is ever counted against the next one's.
    static GRADINGS: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "kit-grade-{}-{}",
        std::process::id(),
        GRADINGS.fetch_add(1, Ordering::Relaxed)
    );
    let cgroup = PidsCgroup::create(&name);
    // The shell joins the cgroup before it becomes the program, so nothing it starts escapes.
    let join = match &cgroup {
        Some(cgroup) => format!("echo $$ > '{}/cgroup.procs' && ", cgroup.0.display()),
        None => String::new(),
    };
    let mut ours = kit::own_children().lock().unwrap_or_else(|e| e.into_inner());
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(format!("{join}exec \"$0\" \"$@\""))
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        shell.current_dir(dir);
    }
    let mut child = shell
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", command.get_program().to_string_lossy()))?;
    ours.insert(child.id() as libc::pid_t);
    drop(ours);
    let readers = [
        child.stdout.take().map(read_all_box),
        child.stderr.take().map(read_all_box),
    ];
    let readers = readers.map(|r| r.map(std::thread::spawn));
    let started = Instant::now();
    let (timed_out, status) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (false, status.code()),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(POLL),
            _ => break (true, None),
        }
    };
    // Whatever the grading left behind goes now, before the next student uses this copy.
    // SAFETY: kill(2) on our child's process group; no memory is touched.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    if let Some(cgroup) = &cgroup {
        cgroup.kill_all();
    }
    let _ = child.wait();
    kit::own_children()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(child.id() as libc::pid_t));
    let [stdout, stderr] = readers.map(|r| r.and_then(|r| r.join().ok()).unwrap_or_default());
    if timed_out {
        return Err(format!(
            "grading took longer than {} s and was stopped",
            limit.as_secs()
        ));
    }
    Ok((status, stdout, stderr))
}

/// Makes this process the reaper of every orphan of the gradings (what a killed check started)
/// and reaps them as they die, so that they leave their cgroup at once: a student's fork loop
/// must not leave zombies that count against the next check's processes.
fn start_reaping_orphans(stop: &'static AtomicBool) {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: waitid writes the state of one dead child into `info`, which we own.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let peek = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: as above; P_ALL with WNOWAIT only looks.
            let found = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, peek) } == 0;
            // SAFETY: `info` was filled by waitid for a child that exited.
            let pid = if found { unsafe { info.si_pid() } } else { 0 };
            let ours = kit::own_children()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&pid);
            if pid != 0 && !ours {
                // SAFETY: reaps exactly that orphan; no memory is passed.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

fn read_all_box(mut pipe: impl Read + Send + 'static) -> Box<dyn FnOnce() -> String + Send> {
    Box::new(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// The part a check grades: its `part` field, or its name's prefix (`lab3_…`, `e2e_…`).
fn part_of(result: &Value) -> String {
    result["part"].as_str().map(str::to_owned).unwrap_or_else(|| {
        result["check"]
            .as_str()
            .unwrap_or_default()
            .split('_')
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

/// Adds up points by part, in total, and the checks not run.
fn score(graded: &mut Graded) {
    for part in PARTS {
        graded.points.insert(part.to_owned(), 0);
    }
    for result in &graded.results {
        let points = result["points"].as_u64().unwrap_or_default();
        // As in the grader's score: a check this host could not run is in neither the score nor
        // the maximum.
        match result["outcome"].as_str() {
            Some("passed") => {
                *graded.points.entry(part_of(result)).or_default() += points;
                graded.total += points;
                graded.max += points;
            }
            Some("not_run") => graded.not_run += 1,
            _ => graded.max += points,
        }
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The gradebook: a header, then one row per student.
fn csv(graded: &[Graded]) -> String {
    let mut out = format!("student,{},total,max,not_run,error\n", PARTS.join(","));
    for student in graded {
        let points: Vec<String> = PARTS
            .iter()
            .map(|p| student.points.get(*p).copied().unwrap_or_default().to_string())
            .collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_field(&student.name),
            points.join(","),
            student.total,
            student.max,
            student.not_run,
            csv_field(&student.error)
        );
    }
    out
}

fn write_reports(dir: &Path, student: &Graded) -> Result<(), Failure> {
    let json = json!({
        "student": student.name,
        "points": student.points,
        "total": student.total,
        "max": student.max,
        "not_run": student.not_run,
        "error": student.error,
        "missing_lab_files": student.missing,
        "seconds": student.seconds,
        "checks": student.results,
    });
    let path = dir.join(format!("{}.json", student.name));
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap_or_default())
        .map_err(|err| (kit::status::IO, kit::io_error("write", &path, err)))?;
    let path = dir.join(format!("{}.txt", student.name));
    std::fs::write(&path, text_report(student)).map_err(|err| (kit::status::IO, kit::io_error("write", &path, err)))
}

/// What a student reads: the score, then every check that did not pass, part by part.
fn text_report(student: &Graded) -> String {
    let mut out = format!("{}: {}/{}\n", student.name, student.total, student.max);
    if !student.error.is_empty() {
        let _ = writeln!(out, "no score: {}", student.error);
    }
    for file in &student.missing {
        let _ = writeln!(out, "not submitted, graded as the untouched stub: {file}");
    }
    if !student.notes.is_empty() {
        let _ = writeln!(out, "{}", student.notes);
    }
    for part in PARTS {
        let of_part: Vec<&Value> = student.results.iter().filter(|r| part_of(r) == part).collect();
        if of_part.is_empty() {
            continue;
        }
        let max: u64 = of_part.iter().map(|r| r["points"].as_u64().unwrap_or_default()).sum();
        let _ = writeln!(
            out,
            "\n{part}: {}/{max}",
            student.points.get(part).copied().unwrap_or_default()
        );
        for result in of_part {
            let mark = if result["outcome"] == "passed" { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  {mark} {}", result["check"].as_str().unwrap_or_default());
            if result["outcome"] != "passed" {
                let _ = writeln!(out, "       {}", result["message"].as_str().unwrap_or_default());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_add_up_by_part_and_not_run_is_counted() {
        let mut graded = Graded {
            name: "a, b".into(),
            points: BTreeMap::new(),
            total: 0,
            max: 0,
            not_run: 0,
            error: String::new(),
            results: serde_json::from_str(
                r#"[{"check":"lab1_x","points":2,"outcome":"passed"},{"check":"lab1_y","points":3,"outcome":"failed"},
                    {"check":"e2e_z","part":"e2e","points":4,"outcome":"passed"},{"check":"lab4_w","points":1,"outcome":"not_run"}]"#,
            )
            .unwrap(),
            missing: Vec::new(),
            notes: String::new(),
            seconds: 0.0,
        };
        score(&mut graded);
        assert_eq!((graded.total, graded.max, graded.not_run), (6, 9, 1));
        assert_eq!(
            csv(&[graded]),
            "student,lab1,lab2,lab3,lab4,e2e,lab0,lab5,lab6,total,max,not_run,error\n\"a, b\",2,0,0,0,4,0,0,0,6,9,1,\n"
        );
    }
}
