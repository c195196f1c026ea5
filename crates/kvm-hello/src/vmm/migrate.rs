//! Lab 7's sessions: the source (`kvm-hello --lab migrate`) runs the migration guest, starts the
//! destination (itself with `--destination`, the stream on fd 3), lets the guest run a while,
//! then calls the student's `migrate`; the destination calls the student's `receive` and runs the
//! guest to its end, its output sent back as `Output` records, so that one process prints the
//! whole run. When the move fails before the destination has resumed the guest, the source's VM
//! is whole (it was only ever stopped where its state is complete): the source runs it to its end.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kit_common::Status;
use lab7_migration::{
    GuestVm, Lab7Error, Link, LinkError, Migration, Plan, Record, SliceEnd, SliceTimer, read_checksum, read_progress,
};

use super::diagnosis::{self, lab1_failure, refused};
use super::watchdog::{LabFn, Limits, Watchdog};
use super::{Failure, RunReport, vcpu_thread};
use crate::cli::MigrateOptions;
use crate::labs::Labs;

/// The chapter of lab 7.
pub const LAB7: &str = "Lab 7, Moving a running VM";
/// The file descriptor the destination finds its end of the stream on.
pub const DESTINATION_FD: i32 = 3;
/// The guest's steps done on the source before the move starts (half its steps when it has fewer
/// than twice that): a point in the guest's run, not a time, so the move catches it mid-run
/// however busy the host is (its steps are paced on the TSC, which runs on while the vCPU waits
/// for a CPU: a fixed guest time could see the whole run on a loaded host).
pub const MIGRATE_AT_STEP: u64 = 300;
/// The guest time of each slice while the guest is brought to that step.
const LEAD_SLICE: Duration = Duration::from_millis(5);
/// The most guest time spent bringing it there (a few hundred ms on any host): past it, the move
/// starts wherever the guest is.
const LEAD_LIMIT: Duration = Duration::from_secs(10);
/// The source stops pre-copying once the dirty set is this small (pages).
pub const STOP_PAGES: usize = 16;
/// The shortest slice the guest runs between two rounds.
pub const MIN_SLICE: Duration = Duration::from_millis(1);

const CREATE_VM: LabFn = LabFn {
    name: "lab7 create_vm (given; it calls your lab 6's create_guest_vm)",
    book: LAB7,
    runs_the_guest: false,
};
const MIGRATE: LabFn = LabFn {
    name: "lab7 migrate",
    book: LAB7,
    runs_the_guest: false,
};
const RECEIVE: LabFn = LabFn {
    name: "lab7 receive",
    book: LAB7,
    runs_the_guest: false,
};
const RUN_TO_END: LabFn = LabFn {
    name: "the migration guest",
    book: LAB7,
    runs_the_guest: true,
};

/// What a migrate run did.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateReport {
    /// The options it ran with.
    pub options: MigrateOptions,
    /// When the source stops pre-copying.
    pub plan: Plan,
    /// What `migrate` did, when it succeeded.
    pub migration: Option<Migration>,
    /// Where the guest halted: `source` or `destination` (None: it did not).
    pub finished_on: Option<&'static str>,
    /// The guest's checksum, once it halted.
    pub checksum: Option<u64>,
    /// The steps the guest had done (its progress in its memory) when `migrate` returned, i.e.
    /// at the stop-and-copy: all of them when it finished during pre-copy, which ends the rounds.
    pub steps_at_stop: Option<u64>,
    /// Why the move failed, if it did.
    pub error: Option<String>,
}

/// The plan every move follows; `--rounds` sets its rounds.
pub fn plan(options: &MigrateOptions) -> Plan {
    Plan {
        max_rounds: options.max_rounds,
        stop_pages: STOP_PAGES,
        min_slice: MIN_SLICE,
    }
}

fn enter(watchdog: &Watchdog, function: LabFn, report: &RunReport) -> Result<(), Failure> {
    watchdog
        .enter(function)
        .map_err(|stop| diagnosis::timeout(&stop, report))
}

/// A lab 7 error as the one line the student reads.
fn lab7_failure(err: Lab7Error) -> Failure {
    match err {
        Lab7Error::Lab1(err) => lab1_failure(err),
        Lab7Error::Ioctl { ioctl, source } => refused(ioctl, source),
        Lab7Error::Lab2(err) => Failure::new(Status::GuestFault, format!("{err} (book: Lab 2, Page tables)")),
        Lab7Error::Lab6(lab6_scheduling::Lab6Error::Lab1(err)) => lab1_failure(err),
        Lab7Error::Lab6(lab6_scheduling::Lab6Error::Registers { ioctl, source }) => refused(ioctl, source),
        other => Failure::new(Status::GuestFault, format!("{other} (book: {LAB7})")),
    }
}

/// Runs the guest until it halts, with the watchdog armed: a guest that spins is stopped.
fn run_to_end(
    labs: &Labs,
    guest: &mut GuestVm,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    report: &RunReport,
) -> Result<u64, Failure> {
    enter(watchdog, RUN_TO_END, report)?;
    let mut timer = SliceTimer::new().map_err(|err| lab7_failure(err.into()))?;
    let armed = watchdog.arm(&guest.vcpu).map_err(|err| {
        Failure::new(
            Status::GuestFault,
            format!("cannot map the vCPU's kvm_run for the watchdog: {err} (book: Troubleshooting)"),
        )
    })?;
    loop {
        match (labs.migration_run_slice)(guest, None, &mut timer, console).map_err(lab7_failure)? {
            SliceEnd::Halted => break,
            SliceEnd::Timer => {
                if let Some(stop) = watchdog.stopped() {
                    return Err(diagnosis::timeout(&stop, report));
                }
            }
        }
    }
    drop(armed);
    read_checksum(&guest.vm.memory).map_err(lab7_failure)
}

/// Where the destination runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// A second kvm-hello process (`--destination`, the stream on `DESTINATION_FD`): what
    /// `kvm-hello --lab migrate` does.
    Process,
    /// A thread of this process, with the same lab functions: what the grader's probe does, so
    /// that a seeded mistake is on both ends.
    Thread,
}

/// The destination, as the source holds it: killed (or cut off) and reaped when dropped.
enum Destination {
    Process(Child),
    Thread(Option<std::thread::JoinHandle<Status>>, UnixStream),
}

impl Destination {
    /// Starts the destination with the other end of a new socket pair; returns it and the
    /// source's end of the stream.
    fn start(place: Where, labs: Labs, timeout: Duration) -> io::Result<(Destination, Link)> {
        let (ours, theirs) = UnixStream::pair()?;
        let destination = match place {
            Where::Process => Destination::Process(spawn_process(&theirs, timeout)?),
            Where::Thread => {
                let cut = ours.try_clone()?;
                let thread = std::thread::Builder::new()
                    .name("lab-destination".into())
                    .spawn(move || serve_destination(labs, theirs, timeout))?;
                Destination::Thread(Some(thread), cut)
            }
        };
        Ok((destination, Link::new(ours)?))
    }

    /// The process's id, for `--kill-destination` (none for a thread).
    fn pid(&self) -> Option<libc::pid_t> {
        match self {
            Destination::Process(child) => Some(child.id() as libc::pid_t),
            Destination::Thread(..) => None,
        }
    }

    fn kill(&mut self) {
        match self {
            Destination::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Destination::Thread(thread, cut) => {
                // A thread cannot be killed: its stream is cut, so its next read or write fails.
                let _ = cut.shutdown(std::net::Shutdown::Both);
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kvm-hello --lab migrate --destination` with `theirs` on `DESTINATION_FD`.
fn spawn_process(theirs: &UnixStream, timeout: Duration) -> io::Result<Child> {
    let program = std::env::current_exe()?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new(program);
    command
        .args(SELF_PREFIX.get().map(Vec::as_slice).unwrap_or_default())
        .args(["--lab", "migrate", "--destination", "--timeout"])
        .arg(timeout.as_secs_f64().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec the closure calls only dup2 and fcntl, which are
    // async-signal-safe; it touches no memory but its copied integer.
    unsafe {
        command.pre_exec(move || {
            if theirs_fd == DESTINATION_FD {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                if libc::fcntl(theirs_fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(theirs_fd, DESTINATION_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// The arguments this executable needs before kvm-hello's own (`vmm` for the grader's probe).
static SELF_PREFIX: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Tells `--lab migrate` how to start this executable as kvm-hello: with `prefix` before
/// kvm-hello's arguments (a program that embeds kvm-hello behind a first argument calls it once).
pub fn set_self_prefix(prefix: Vec<String>) {
    let _ = SELF_PREFIX.set(prefix);
}

// ANCHOR: migrate_session
/// The source: the guest runs to `migrate_at` its steps, then moves (or, with `--no-migration`, runs here
/// to its end).
pub(crate) fn migrate_session(
    labs: &Labs,
    options: MigrateOptions,
    place: Where,
    timeout: Duration,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    report: &mut RunReport,
) -> Result<(), Failure> {
    let base = labs.base();
    let mut record = MigrateReport {
        options,
        plan: plan(&options),
        migration: None,
        finished_on: None,
        checksum: None,
        steps_at_stop: None,
        error: None,
    };
    enter(watchdog, CREATE_VM, report)?;
    let mut guest = lab7_migration::create_vm(labs.create_guest_vm, &base, guests::MIGRATE64, &options.params)
        .map_err(lab7_failure)?;
    if options.no_migration {
        let ran = run_to_end(labs, &mut guest, watchdog, console, report);
        return finish_here(guest, ran, record, None, report);
    }
    let (mut destination, mut link) = Destination::start(place, *labs, timeout)
        .map_err(|err| Failure::new(Status::GuestFault, format!("cannot start the destination: {err}")))?;
    if let (Some(round), Some(pid)) = (options.kill_destination, destination.pid()) {
        link.after_round(Box::new(move |sent| {
            if sent == round {
                // SAFETY: kill(2) on our own child's pid, which is not reaped before the
                // `Destination` drops; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }));
    }
    run_to_step(labs, &mut guest, migrate_at(options.params.steps), console)?;
    enter(watchdog, MIGRATE, report)?;
    let moved = (labs.migrate)(&labs.migration_parts(), &mut guest, &record.plan, &mut link, console);
    record.steps_at_stop = read_progress(&guest.vm.memory).ok();
    report.counts = guest.exits;
    match moved {
        Ok(migration) => {
            record.migration = Some(migration);
            drop(guest);
            let followed = follow(&mut link, console);
            report.counts = add_counts(&report.counts, &followed.as_ref().map(|f| f.1).unwrap_or_default());
            destination.kill();
            match followed {
                Ok((checksum, _)) => {
                    record.finished_on = Some("destination");
                    record.checksum = Some(checksum);
                    report.migration = Some(record);
                    Ok(())
                }
                Err(why) => {
                    let message = format!(
                        "the destination stopped after it resumed the guest: {why}; the guest's run is lost \
                         (its state left the source)"
                    );
                    record.error = Some(message.clone());
                    report.migration = Some(record);
                    Err(Failure::new(Status::MigrationFailed, message))
                }
            }
        }
        Err(err) => {
            let (cause, status) = cause_of(err, &mut link);
            destination.kill();
            record.error = Some(cause.clone());
            let ran = run_to_end(labs, &mut guest, watchdog, console, report);
            finish_here(guest, ran, record, Some((cause, status)), report)
        }
    }
}
// ANCHOR_END: migrate_session

/// The step at which a guest of `steps` steps moves.
pub fn migrate_at(steps: u64) -> u64 {
    MIGRATE_AT_STEP.min(steps / 2)
}

/// Runs the guest in short slices until it has done `step` steps (or halted, or `LEAD_LIMIT` of
/// slices went by).
fn run_to_step(labs: &Labs, guest: &mut GuestVm, step: u64, console: &mut dyn Write) -> Result<(), Failure> {
    let mut timer = SliceTimer::new().map_err(|err| lab7_failure(err.into()))?;
    let mut ran = Duration::ZERO;
    while !guest.halted && ran < LEAD_LIMIT && read_progress(&guest.vm.memory).map_err(lab7_failure)? < step {
        (labs.migration_run_slice)(guest, Some(LEAD_SLICE), &mut timer, console).map_err(lab7_failure)?;
        ran += LEAD_SLICE;
    }
    Ok(())
}

/// The guest halted on the source: the report, and the failure of the move if there was one.
fn finish_here(
    guest: GuestVm,
    ran: Result<u64, Failure>,
    mut record: MigrateReport,
    failed_move: Option<(String, Status)>,
    report: &mut RunReport,
) -> Result<(), Failure> {
    report.counts = guest.exits;
    let checksum = match ran {
        Ok(checksum) => checksum,
        Err(failure) => {
            report.migration = Some(record);
            return Err(failure);
        }
    };
    record.finished_on = Some("source");
    record.checksum = Some(checksum);
    report.migration = Some(record);
    match failed_move {
        None => Ok(()),
        // A stub or a panic of lab code on the destination: its own line, as any run gives it.
        Some((cause, status @ (Status::NotImplemented | Status::LabPanicked))) => Err(Failure::new(status, cause)),
        Some((cause, status)) => Err(Failure::new(
            status,
            format!("migration failed: {cause}; the source ran the guest to its end alone (checksum {checksum:#018x})"),
        )),
    }
}

/// Why `migrate` failed, and the status it ends the run with. A closed stream is explained by
/// the destination's own `Failed` record when it sent one.
fn cause_of(err: Lab7Error, link: &mut Link) -> (String, Status) {
    let destination_said = |status: u8, message: String| match status {
        6 => (message, Status::NotImplemented),
        7 => (format!("{message} (on the destination)"), Status::LabPanicked),
        _ => (format!("the destination stopped: {message}"), Status::MigrationFailed),
    };
    match err {
        Lab7Error::Destination { status, message } => destination_said(status, message),
        Lab7Error::Link(LinkError::Closed) => {
            let _ = link.stream().set_read_timeout(Some(Duration::from_secs(2)));
            loop {
                match link.receive() {
                    Ok(Record::Failed { status, message }) => return destination_said(status, message),
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            let when = match link.rounds_sent {
                0 => "before the first round was sent".to_owned(),
                round => format!("after round {round} was sent"),
            };
            (
                format!("the destination is gone (its end of the stream closed {when})"),
                Status::MigrationFailed,
            )
        }
        other => (other.to_string(), Status::MigrationFailed),
    }
}

/// After the move: the destination's output, then its checksum and exits.
fn follow(link: &mut Link, console: &mut dyn Write) -> Result<(u64, lab4_exit_loop::ExitCounts), String> {
    // The destination's own watchdog ends a guest that does not halt: no timeout here.
    let _ = link.stream().set_read_timeout(None);
    loop {
        match link.receive() {
            Ok(Record::Output(bytes)) => console
                .write_all(&bytes)
                .map_err(|err| format!("cannot write the guest's output: {err}"))?,
            Ok(Record::Finished { checksum, exits }) => return Ok((checksum, exits)),
            Ok(Record::Failed { message, .. }) => return Err(message),
            Ok(other) => return Err(format!("it sent {other:?} instead of output")),
            Err(LinkError::Closed) => return Err("it closed the stream (killed?)".to_owned()),
            Err(err) => return Err(err.to_string()),
        }
    }
}

fn add_counts(a: &lab4_exit_loop::ExitCounts, b: &lab4_exit_loop::ExitCounts) -> lab4_exit_loop::ExitCounts {
    lab4_exit_loop::ExitCounts {
        io_out: a.io_out.saturating_add(b.io_out),
        io_in: a.io_in.saturating_add(b.io_in),
        hlt: a.hlt.saturating_add(b.hlt),
        mmio: a.mmio.saturating_add(b.mmio),
        shutdown: a.shutdown.saturating_add(b.shutdown),
        other: a.other.saturating_add(b.other),
    }
}

/// The destination's console: the guest's bytes go back to the source, a line per record.
struct LinkConsole<'a> {
    link: &'a mut Link,
    unsent: Vec<u8>,
}

impl Write for LinkConsole<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.unsent.extend_from_slice(buf);
        if self.unsent.contains(&b'\n') {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.unsent);
        self.link
            .send(&Record::Output(bytes))
            .map_err(|err| io::Error::new(io::ErrorKind::BrokenPipe, err.to_string()))
    }
}

/// The destination's session: receive, resume, run to the end, report the checksum.
fn destination_session(
    labs: &Labs,
    mut link: Link,
    watchdog: &Watchdog,
    report: &mut RunReport,
) -> Result<(), Failure> {
    enter(watchdog, RECEIVE, report)?;
    let mut guest = (labs.receive)(&labs.base(), &mut link).map_err(lab7_failure)?;
    link.send(&Record::Resumed)
        .map_err(|err| Failure::new(Status::MigrationFailed, format!("the source is gone: {err}")))?;
    let mut console = LinkConsole {
        link: &mut link,
        unsent: Vec::new(),
    };
    let ran = run_to_end(labs, &mut guest, watchdog, &mut console, report);
    let flushed = console.flush();
    report.counts = guest.exits;
    let checksum = ran?;
    flushed.map_err(|err| Failure::new(Status::MigrationFailed, format!("the source is gone: {err}")))?;
    link.send(&Record::Finished {
        checksum,
        exits: guest.exits,
    })
    .map_err(|err| Failure::new(Status::MigrationFailed, format!("the source is gone: {err}")))
}

/// `kvm-hello --lab migrate --destination`: the stream is on `DESTINATION_FD`. Prints nothing:
/// a failure goes back to the source as a `Failed` record, which the source reports.
pub fn run_destination(labs: Labs, timeout: Duration) -> Status {
    // SAFETY: fstat on a descriptor number writes only into `stat`; a closed one gives EBADF.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `stat` is a valid place for the answer.
    let is_socket =
        unsafe { libc::fstat(DESTINATION_FD, &mut stat) } == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK;
    if !is_socket {
        crate::report::print_summary_line(
            "--destination is the migration's other end, started by kvm-hello --lab migrate itself: fd 3 is not its stream",
        );
        return Status::BadInput;
    }
    // SAFETY: fd 3 is the socket the source passed (checked above), owned by nothing else in
    // this process: kvm-hello opens no file before this point.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(DESTINATION_FD) });
    serve_destination(labs, stream, timeout)
}

/// The destination's work on its end of the stream, under a watchdog of its own; a failure
/// goes back to the source as a `Failed` record.
fn serve_destination(labs: Labs, stream: UnixStream, timeout: Duration) -> Status {
    let spare = stream.try_clone().and_then(Link::new);
    let link = match Link::new(stream) {
        Ok(link) => link,
        Err(_) => return Status::MigrationFailed,
    };
    let report = vcpu_thread::run_session(Limits::of_timeout(timeout), true, move |watchdog, _console, report| {
        destination_session(&labs, link, watchdog, report)
    });
    match report.failure {
        None => Status::Ok,
        Some(failure) => {
            if let Ok(mut spare) = spare {
                let _ = spare.send(&Record::Failed {
                    status: failure.status.code() as u8,
                    message: failure.message,
                });
            }
            failure.status
        }
    }
}

/// The lines the source prints on stderr before its summary: a line per round, the
/// stop-and-copy round and the totals.
pub fn round_lines(record: &MigrateReport) -> Vec<String> {
    let Some(migration) = &record.migration else {
        return Vec::new();
    };
    let mut lines: Vec<String> = migration
        .rounds
        .iter()
        .map(|round| {
            format!(
                "round {}: sent {} pages in {:.2} ms, the guest ran {:.2} ms and dirtied {} pages",
                round.number,
                round.pages,
                round.send_time.as_secs_f64() * 1e3,
                round.guest_time.as_secs_f64() * 1e3,
                round.dirty_after
            )
        })
        .collect();
    lines.push(format!(
        "stop-and-copy: {} pages and the vCPU's state; downtime {:.2} ms (stop to resume)",
        migration.stop_copy_pages,
        migration.downtime.as_secs_f64() * 1e3
    ));
    lines.push(format!(
        "sent {} pages in all for a guest of {} pages ({:.2}x)",
        migration.total_pages(),
        lab7_migration::GUEST_PAGES,
        migration.total_pages() as f64 / lab7_migration::GUEST_PAGES as f64
    ));
    lines
}

/// The one-line summary of a migrate run that succeeded.
pub fn summary(record: &MigrateReport) -> String {
    let checksum = record
        .checksum
        .map(|c| format!("{c:#018x}"))
        .unwrap_or_else(|| "none".into());
    match &record.migration {
        Some(migration) => format!(
            "migrate: moved after {} pre-copy rounds, downtime {:.2} ms; the guest finished on the {}, checksum {checksum}",
            migration.rounds.len(),
            migration.downtime.as_secs_f64() * 1e3,
            record.finished_on.unwrap_or("?"),
        ),
        None => format!("migrate: not moved (--no-migration); the guest finished on the source, checksum {checksum}"),
    }
}
