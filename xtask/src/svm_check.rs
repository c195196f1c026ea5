//! `cargo xtask svm-check`: the kit under KVM on AMD-V, emulated by QEMU, against this host.
//!
//! Builds the release `kvm-hello` and `grader` (the reference in the instructors' repository,
//! the labs as they are in a student copy or with `--student`), packs them with busybox and
//! Debian's KVM modules into an initramfs, boots Debian's kernel on a QEMU CPU with SVM and NPT,
//! runs every case of [`cases::all`] there and here, and prints one table: check by check, this
//! host's KVM against SVM. Status 0 only when every check passed on SVM.

mod cases;
mod cpio;
mod initramfs;
mod kmod;
mod serial;
mod table;

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cases::{Case, Cell, Run};

use crate::progress::Progress;

/// The Debian packages the command needs, in the order of the apt-get line it prints.
const PACKAGES: [&str; 3] = ["qemu-system-x86", "linux-image-amd64", "busybox-static"];
/// QEMU with TCG: a CPU model with AMD-V (`svm`) and nested paging (`npt`) for kvm-amd.
const QEMU: &str = "qemu-system-x86_64";
const QEMU_CPU: &str = "qemu64,+svm,+npt";
/// Guest memory in MiB: the kernel, the initramfs in RAM and the grader's runs fit.
const QEMU_MEMORY_MIB: &str = "512";
/// `panic=-1` reboots at once on a panic, and `-no-reboot` turns that into QEMU's exit.
const KERNEL_COMMAND_LINE: &str = "console=ttyS0 quiet panic=-1";
/// Where static busybox may be.
const BUSYBOX_PATHS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
/// The host runs' own limits (kvm-hello has its `--timeout`, the grader its per-check limits).
const HOST_KVM_HELLO_LIMIT: Duration = Duration::from_secs(60);
const HOST_GRADER_LIMIT: Duration = Duration::from_secs(900);
/// How often a running child is looked at.
const POLL: Duration = Duration::from_millis(50);
/// How often the progress bar (on a terminal only) reads what the guest reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Lines of the guest's console shown when something went wrong.
const CONSOLE_TAIL: usize = 12;

/// Runs the kit's binaries under KVM on emulated AMD-V (QEMU) and compares with this host.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build the labs' own code (lib.rs) instead of the reference solution. A student copy
    /// (no labs/*/src/solution.rs) always builds the labs as they are.
    #[arg(long)]
    student: bool,
    /// Stop QEMU (and fail) after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    time_limit: u64,
    /// Also show every row whose messages differ between this host and SVM (a triple fault's
    /// RIP, for instance), not only its pass or fail.
    #[arg(long, short)]
    verbose: bool,
}

/// Why the command could not finish; each has its exit status (1 is a check failed on SVM,
/// 2 is bad usage).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} {}: install with `sudo apt-get install -y {}` (Debian packages)",
        if .0.len() == 1 { "missing" } else { "missing:" },
        .0.iter().map(|(what, package)| format!("{what} (package {package})")).collect::<Vec<_>>().join(", "),
        packages(.0))]
    Missing(Vec<(String, &'static str)>),
    #[error(
        "cargo build of kvm-hello and the grader failed{0}: the labs must compile before they can run on SVM (see cargo's messages above)"
    )]
    Build(String),
    #[error("{0}")]
    Guest(String),
    #[error("{0}")]
    Io(String),
}

impl Error {
    fn io(context: String, err: std::io::Error) -> Self {
        Error::Io(format!("{context}: {err}"))
    }

    fn status(&self) -> u8 {
        match self {
            Error::Missing(_) => 3,
            Error::Build(_) => 4,
            Error::Guest(_) => 5,
            Error::Io(_) => 6,
        }
    }
}

fn packages(missing: &[(String, &'static str)]) -> String {
    let mut names: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    names.dedup();
    names.join(" ")
}

pub fn run(args: &Args) -> ExitCode {
    match svm_check(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("svm-check: {err}");
            ExitCode::from(err.status())
        }
    }
}

/// The workspace root: xtask sits one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// The kernel, its modules and the tools, found on this machine.
#[derive(Debug)]
struct Tools {
    kernel: PathBuf,
    modules_dir: PathBuf,
    busybox: Vec<u8>,
}

fn svm_check(args: &Args) -> Result<bool, Error> {
    let started = Instant::now();
    let root = workspace_root();
    let tools = find_tools()?;
    let reference = !args.student && is_instructors_repository(&root);
    let build = if reference { "reference build" } else { "student build" };
    eprintln!("svm-check: building the {build} (release)");
    let binaries = build_binaries(&root, reference)?;

    let temp = TempDir::new()?;
    let corpus_dir = temp.path.join("corpus");
    write_images(&corpus_dir)?;
    let cases = cases::all(guests::CORPUS);
    let initrd = temp.path.join("initramfs.cpio");
    write_initramfs(&tools, &binaries, &cases, &initrd)?;

    let progress = Progress::new(cases.len(), "cases run on SVM");
    progress.line(&format!(
        "svm-check: booting {} under QEMU (TCG, AMD-V emulated), at most {} s",
        tools.kernel.display(),
        args.time_limit
    ));
    let mut qemu = Qemu::start(&tools.kernel, &initrd, &temp.path)?;
    let host_title = host_title();
    progress.line(&format!(
        "svm-check: running the same cases on this machine ({host_title})"
    ));
    // The host runs beside QEMU, so QEMU's time limit holds whatever the host's runs take.
    let host_done = AtomicUsize::new(0);
    let qemu_done = AtomicBool::new(false);
    let results_log = temp.path.join("results.log");
    let (host_rows, finished) = std::thread::scope(|scope| {
        let host = scope.spawn(|| run_on_host(&cases, &binaries, &corpus_dir, &temp.path, &host_done));
        if progress.is_shown() {
            scope.spawn(|| show_progress(&progress, cases.len(), &results_log, &host_done, &qemu_done));
        }
        let finished = qemu.wait(Duration::from_secs(args.time_limit));
        qemu_done.store(true, Ordering::Relaxed);
        (host.join().expect("the host's runs do not panic"), finished)
    });
    progress.finish();
    let (host_rows, finished) = (host_rows?, finished?);

    let log = std::fs::read_to_string(temp.path.join("results.log")).unwrap_or_default();
    let report = serial::parse(&log);
    let console = console_tail(&temp.path.join("console.log"));
    if report.kvm != Some(true) {
        return Err(Error::Guest(no_kvm_message(
            &report,
            finished,
            &console,
            &qemu.stderr(),
        )));
    }
    let rows = table::merge(host_rows, svm_rows(&cases, &report));
    print!("{}", table::render(&rows, &host_title, args.verbose));
    if !report.done {
        let why = match finished {
            Finished::TimedOut => format!("QEMU did not finish within {} s and was killed", args.time_limit),
            Finished::Exited(status) => format!("QEMU ended ({status}) before the guest had run every case"),
        };
        return Err(Error::Guest(format!(
            "{why} ({} of {} cases reported); the guest's console ended with: {console}",
            report.runs.len(),
            cases.len()
        )));
    }
    let (passed, line) = table::verdict(&rows, build, &host_title);
    println!("{line} ({:.0} s in all)", started.elapsed().as_secs_f64());
    Ok(passed)
}

/// The bar (on a terminal): the cases the guest has reported so far, and this host's.
fn show_progress(
    progress: &Progress,
    total: usize,
    results_log: &Path,
    host_done: &AtomicUsize,
    qemu_done: &AtomicBool,
) {
    while !qemu_done.load(Ordering::Relaxed) {
        let log = std::fs::read_to_string(results_log).unwrap_or_default();
        let host = host_done.load(Ordering::Relaxed);
        progress.set(serial::parse(&log).runs.len(), format!("(this host: {host}/{total})"));
        std::thread::sleep(PROGRESS_EVERY);
    }
}

/// The images the cases load, written for the host's runs.
fn write_images(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir(dir).map_err(|err| Error::io(format!("creating {}", dir.display()), err))?;
    for (name, image) in cases::images(guests::CORPUS) {
        let path = dir.join(name);
        std::fs::write(&path, image).map_err(|err| Error::io(format!("writing {}", path.display()), err))?;
    }
    Ok(())
}

/// The guest's rows: every case it reported, judged.
fn svm_rows(cases: &[Case], report: &serial::Report) -> Vec<(String, Cell)> {
    cases
        .iter()
        .enumerate()
        .filter_map(|(id, case)| report.runs.get(&id).map(|run| cases::judge(case, run)))
        .flatten()
        .collect()
}

/// The instructors' repository has the reference solutions; a student copy has none.
fn is_instructors_repository(root: &Path) -> bool {
    std::fs::read_dir(root.join("labs"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|lab| lab.path().join("src/solution.rs").is_file())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// QEMU, a kernel with kvm-amd and its modules, and a static busybox; every missing one named
/// with its Debian package.
fn find_tools() -> Result<Tools, Error> {
    let mut missing = Vec::new();
    if !on_path(QEMU) {
        missing.push((QEMU.to_owned(), PACKAGES[0]));
    }
    let kernel = find_kernel();
    if kernel.is_none() {
        missing.push((
            "a kernel in /boot with kvm-amd in /lib/modules/VERSION/modules.dep".to_owned(),
            PACKAGES[1],
        ));
    }
    let busybox = BUSYBOX_PATHS
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .find(|elf| initramfs::is_static_elf(elf));
    if busybox.is_none() {
        missing.push(("a statically linked busybox".to_owned(), PACKAGES[2]));
    }
    match (kernel, busybox) {
        (Some((kernel, modules_dir)), Some(busybox)) if missing.is_empty() => {
            if let Err(err) = File::open(&kernel) {
                return Err(Error::Io(format!(
                    "cannot read {}: {err} (some distributions keep kernels readable by root only: sudo chmod a+r {})",
                    kernel.display(),
                    kernel.display()
                )));
            }
            Ok(Tools {
                kernel,
                modules_dir,
                busybox,
            })
        }
        _ => Err(Error::Missing(missing)),
    }
}

/// The newest `/boot/vmlinuz-VERSION` whose modules include kvm-amd.
fn find_kernel() -> Option<(PathBuf, PathBuf)> {
    let mut kernels: Vec<(String, PathBuf, PathBuf)> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_owned();
            let modules_dir = Path::new("/lib/modules").join(&version);
            let dep = std::fs::read_to_string(modules_dir.join("modules.dep")).ok()?;
            kmod::ModulesDep::parse(&dep)
                .contains(kmod::KVM_AMD)
                .then(|| (version, entry.path(), modules_dir))
        })
        .collect();
    kernels.sort_by_key(|(version, _, _)| version_key(version));
    kernels.pop().map(|(_, kernel, modules)| (kernel, modules))
}

/// `6.1.0-56-amd64` -> numbers compared as numbers.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap_or(u64::MAX))
        .collect()
}

/// What kind of KVM this host has, for the table's heading.
pub(crate) fn host_title() -> String {
    let loaded = |module: &str| Path::new("/sys/module").join(module).exists();
    let kind = if loaded("kvm_pvm") {
        "PVM"
    } else if loaded("kvm_intel") {
        "VMX"
    } else if loaded("kvm_amd") {
        "SVM"
    } else if !Path::new("/dev/kvm").exists() {
        "no-KVM"
    } else {
        "KVM"
    };
    format!("{kind} host")
}

/// The release binaries, by cargo's own account of what it built.
#[derive(Debug)]
struct Binaries {
    kvm_hello: PathBuf,
    /// The judge.
    grader: PathBuf,
    /// The probe the judge starts, beside it in /bin.
    probe: PathBuf,
}

impl Binaries {
    fn path(&self, program: cases::Program) -> &Path {
        match program {
            cases::Program::KvmHello => &self.kvm_hello,
            cases::Program::Grader => &self.grader,
        }
    }
}

fn build_binaries(root: &Path, reference: bool) -> Result<Binaries, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "-p", "kvm-hello", "-p", "grader"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    // The grader is two programs: the judge and the probe (the labs) it starts beside it.
    if reference {
        command.args(["--features", "kvm-hello/solution,grader/solution"]);
    } else {
        command.args(["--features", "grader/probe"]);
    }
    let mut child = command
        .spawn()
        .map_err(|err| Error::io("cannot run cargo".to_owned(), err))?;
    let mut found = (None, None, None);
    let stdout = child.stdout.take().expect("piped stdout");
    for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let name = message["target"]["name"].as_str();
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        match name {
            Some("kvm-hello") => found.0 = Some(PathBuf::from(executable)),
            Some("grader") => found.1 = Some(PathBuf::from(executable)),
            Some("grader-probe") => found.2 = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    let status = child
        .wait()
        .map_err(|err| Error::io("waiting for cargo".to_owned(), err))?;
    match found {
        (Some(kvm_hello), Some(grader), Some(probe)) if status.success() => Ok(Binaries {
            kvm_hello,
            grader,
            probe,
        }),
        _ if !status.success() => Err(Error::Build(format!(" ({status})"))),
        _ => Err(Error::Build(
            ": it reported no kvm-hello, grader or grader-probe binary".to_owned(),
        )),
    }
}

fn write_initramfs(tools: &Tools, binaries: &Binaries, cases: &[Case], path: &Path) -> Result<(), Error> {
    let dep_file = tools.modules_dir.join("modules.dep");
    let dep =
        std::fs::read_to_string(&dep_file).map_err(|err| Error::io(format!("reading {}", dep_file.display()), err))?;
    let order = kmod::ModulesDep::parse(&dep)
        .load_order(kmod::KVM_AMD)
        .map_err(|err| Error::Io(format!("{}: {err}", dep_file.display())))?;
    let mut modules = Vec::new();
    for module in &order {
        modules.push((
            kmod::plain_file_name(module),
            kmod::read_module(&tools.modules_dir, module)?,
        ));
    }
    let mut libraries = initramfs::shared_libraries(&binaries.kvm_hello)?;
    for library in [
        initramfs::shared_libraries(&binaries.grader)?,
        initramfs::shared_libraries(&binaries.probe)?,
    ]
    .concat()
    {
        if !libraries.contains(&library) {
            libraries.push(library);
        }
    }
    let names: Vec<String> = modules.iter().map(|(name, _)| name.clone()).collect();
    let contents = initramfs::Contents {
        busybox: tools.busybox.clone(),
        modules,
        binaries: vec![
            ("kvm-hello".to_owned(), binaries.kvm_hello.clone()),
            ("grader".to_owned(), binaries.grader.clone()),
            ("grader-probe".to_owned(), binaries.probe.clone()),
        ],
        libraries,
        corpus: cases::images(guests::CORPUS)
            .into_iter()
            .map(|(name, image)| (name, image.to_vec()))
            .collect(),
        init: initramfs::init_script(&names, cases),
    };
    let archive = initramfs::build(&contents)?;
    std::fs::write(path, archive).map_err(|err| Error::io(format!("writing {}", path.display()), err))
}

/// Every case on this host, judged like the guest's.
fn run_on_host(
    cases: &[Case],
    binaries: &Binaries,
    corpus_dir: &Path,
    temp: &Path,
    done: &AtomicUsize,
) -> Result<Vec<(String, Cell)>, Error> {
    let mut rows = Vec::new();
    for case in cases {
        let limit = match case.program {
            cases::Program::KvmHello => HOST_KVM_HELLO_LIMIT,
            cases::Program::Grader => HOST_GRADER_LIMIT,
        };
        let mut command = Command::new(binaries.path(case.program));
        command.args(case.args(corpus_dir));
        let run = run_limited(command, limit, temp)?;
        rows.extend(cases::judge(case, &run));
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(rows)
}

/// Runs `command` with its output in files (a pipe could be held open by a grandchild), killed
/// at `limit`.
fn run_limited(mut command: Command, limit: Duration, temp: &Path) -> Result<Run, Error> {
    let (out_path, err_path) = (temp.join("host.out"), temp.join("host.err"));
    let create = |path: &Path| File::create(path).map_err(|err| Error::io(format!("creating {}", path.display()), err));
    command
        .stdin(Stdio::null())
        .stdout(create(&out_path)?)
        .stderr(create(&err_path)?);
    let mut child = command
        .spawn()
        .map_err(|err| Error::io(format!("cannot run {command:?}"), err))?;
    let status = match wait_until(&mut child, Instant::now() + limit)? {
        Some(status) => status.code(),
        None => None,
    };
    let read = |path: &Path| std::fs::read(path).map_err(|err| Error::io(format!("reading {}", path.display()), err));
    Ok(Run {
        status,
        stdout: read(&out_path)?,
        stderr: String::from_utf8_lossy(&read(&err_path)?).into_owned(),
    })
}

/// Waits for `child` until `deadline`; then kills it and returns None.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<std::process::ExitStatus>, Error> {
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|err| Error::io("waiting for a child".to_owned(), err))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy)]
enum Finished {
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// The running QEMU; killed and reaped when dropped, whatever happened (it starts no process of
/// its own with these options, so it is all there is to kill).
#[derive(Debug)]
struct Qemu {
    child: Child,
    started: Instant,
    stderr_path: PathBuf,
}

impl Qemu {
    fn start(kernel: &Path, initrd: &Path, temp: &Path) -> Result<Self, Error> {
        let serial = |name: &str| format!("file:{}", temp.join(name).display());
        let stderr_path = temp.join("qemu.err");
        let stderr =
            File::create(&stderr_path).map_err(|err| Error::io(format!("creating {}", stderr_path.display()), err))?;
        let mut command = Command::new(QEMU);
        command
            .args(["-accel", "tcg", "-cpu", QEMU_CPU, "-m", QEMU_MEMORY_MIB, "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", KERNEL_COMMAND_LINE])
            // ttyS0: the kernel's console; ttyS1: the results.
            .args(["-serial", &serial("console.log"), "-serial", &serial("results.log")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|err| Error::io(format!("cannot start {QEMU}"), err))?;
        Ok(Qemu {
            child,
            started: Instant::now(),
            stderr_path,
        })
    }

    fn wait(&mut self, limit: Duration) -> Result<Finished, Error> {
        let finished = match wait_until(&mut self.child, self.started + limit)? {
            Some(status) => Finished::Exited(status),
            None => Finished::TimedOut,
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        match finished {
            Finished::Exited(_) => eprintln!("svm-check: the SVM guest ran for {elapsed:.1} s"),
            Finished::TimedOut => eprintln!("svm-check: QEMU killed at the time limit, after {elapsed:.1} s"),
        }
        Ok(finished)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path)
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of the guest's console, on one line.
fn console_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(CONSOLE_TAIL)..];
    if tail.is_empty() {
        "(nothing)".to_owned()
    } else {
        tail.join(" | ")
    }
}

/// Why the guest had no /dev/kvm, or never said.
fn no_kvm_message(report: &serial::Report, finished: Finished, console: &str, qemu_stderr: &str) -> String {
    let qemu = if qemu_stderr.is_empty() {
        String::new()
    } else {
        format!("; QEMU said: {qemu_stderr}")
    };
    if !report.begun {
        let how = match finished {
            Finished::TimedOut => "QEMU was killed at the time limit".to_owned(),
            Finished::Exited(status) => format!("QEMU ended ({status})"),
        };
        return format!("the SVM guest never started its init script ({how}); its console ended with: {console}{qemu}");
    }
    let insmod = if report.insmod_failed.is_empty() {
        String::new()
    } else {
        format!(" (insmod failed for {})", report.insmod_failed.join(", "))
    };
    format!(
        "the SVM guest's kernel did not create /dev/kvm{insmod}: QEMU's CPU needs svm and npt ({QEMU_CPU}); its console ended with: {console}"
    )
}

/// The temporary directories' prefix: `kvm-lab-svm-check-PID-N`.
const TEMP_PREFIX: &str = "kvm-lab-svm-check-";

/// A private temporary directory, removed with everything in it when dropped.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

/// The process id in a temporary directory's name, if it is one of ours.
fn temp_dir_owner(name: &str) -> Option<u32> {
    let (pid, attempt) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    attempt.parse::<u32>().ok()?;
    pid.parse().ok()
}

impl TempDir {
    fn new() -> Result<Self, Error> {
        let base = std::env::temp_dir();
        // A run stopped by Ctrl-C cannot clean up after itself: the next run does.
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let owner = temp_dir_owner(&entry.file_name().to_string_lossy());
            if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        for attempt in 0..100 {
            let path = base.join(format!("{TEMP_PREFIX}{}-{attempt}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(Error::io(format!("creating {}", path.display()), err)),
            }
        }
        Err(Error::Io(format!(
            "cannot create a temporary directory in {}",
            base.display()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_their_packages() {
        let err = Error::Missing(vec![
            ("qemu-system-x86_64".into(), "qemu-system-x86"),
            ("a statically linked busybox".into(), "busybox-static"),
        ]);
        assert_eq!(
            err.to_string(),
            "missing: qemu-system-x86_64 (package qemu-system-x86), a statically linked busybox (package busybox-static): \
             install with `sudo apt-get install -y qemu-system-x86 busybox-static` (Debian packages)"
        );
        assert_eq!(err.status(), 3);
    }

    #[test]
    fn kernel_versions_compare_as_numbers() {
        let mut versions = ["6.1.0-9-amd64", "6.12.3-amd64", "6.1.0-56-amd64"];
        versions.sort_by_key(|v| version_key(v));
        assert_eq!(versions, ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.3-amd64"]);
    }

    #[test]
    fn only_our_temporary_directories_name_an_owner() {
        assert_eq!(temp_dir_owner("kvm-lab-svm-check-4242-0"), Some(4242));
        assert_eq!(temp_dir_owner("kvm-lab-svm-check-4242"), None);
        assert_eq!(temp_dir_owner("kvm-lab-svm-check-x-0"), None);
        assert_eq!(temp_dir_owner("systemd-private-4242-0"), None);
    }

    #[test]
    fn a_temporary_directory_goes_with_its_contents() {
        let dir = TempDir::new().unwrap();
        let path = dir.path.clone();
        std::fs::create_dir(path.join("corpus")).unwrap();
        std::fs::write(path.join("corpus/x.bin"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
