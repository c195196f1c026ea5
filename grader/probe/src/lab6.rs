//! Lab 6: the lab's `next_slice` on the judge's accounts, and two VMs of the judge's worker guest
//! scheduled by the lab's loop. The probe stands between the loop and the lab's `run_slice`, and
//! reports what each slice did to the guest (the words the judge watches, read from the VM's
//! memory), the CPU time it took and what the lab's accounts say; never whether that is right.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use grader_protocol::lab1::LabFailure;
use grader_protocol::lab6::{
    AccountSeen, ChoiceSeen, ConsoleSeen, EndSeen, FirstSlices, GivenUp, LabSlice, NextSlice, PolicySpec, Schedule,
    ScheduleSeen, SliceSeen,
};
use grader_protocol::{Envelope, Request};
use kit_common::LabPanic;
use lab4_exit_loop::ExitCounts;
use lab6_scheduling::{
    Account, GuestMemoryMmap, GuestVm, Lab6Error, Parts, Policy, Slice, SliceEnd, SliceTimer, thread_cpu_time,
};
use vm_memory::{Bytes, GuestAddress};

use crate::{Handled, Probe, handle};

/// Answers lab 6's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        NextSlice::NAME => handle(body, |request: NextSlice| Ok(next_slice(probe, &request))),
        Schedule::NAME => handle(body, |request: Schedule| schedule(probe, request)),
        _ => return None,
    })
}

fn policy(spec: PolicySpec) -> Policy {
    match spec {
        PolicySpec::Cooperative => Policy::Cooperative,
        PolicySpec::RoundRobin { quantum } => Policy::RoundRobin { quantum },
        PolicySpec::Weighted { quantum, shares } => Policy::Weighted { quantum, shares },
    }
}

fn account(seen: &AccountSeen) -> Account {
    Account {
        guest_time: seen.guest_time,
        slices: seen.slices,
        exits: ExitCounts {
            io_out: seen.exits,
            ..ExitCounts::default()
        },
        progress: seen.progress,
    }
}

fn seen(account: &Account) -> AccountSeen {
    AccountSeen {
        guest_time: account.guest_time,
        slices: account.slices,
        exits: account.exits.total(),
        by_reason: [
            account.exits.io_out,
            account.exits.io_in,
            account.exits.hlt,
            account.exits.mmio,
            account.exits.shutdown,
            account.exits.other,
        ],
        progress: account.progress,
    }
}

fn next_slice(probe: &Probe, request: &NextSlice) -> Vec<ChoiceSeen> {
    request
        .questions
        .iter()
        .map(|question| {
            let accounts = [account(&question.accounts[0]), account(&question.accounts[1])];
            let choice = (probe.labs.next_slice)(&policy(question.policy), &accounts, question.last);
            ChoiceSeen {
                vm: choice.vm,
                length: choice.length,
            }
        })
        .collect()
}

/// The words at `watch` in `memory` (0 where an address is outside it).
fn read_words(memory: &GuestMemoryMmap, watch: &[u64]) -> Vec<u64> {
    watch
        .iter()
        .map(|&addr| memory.read_obj::<u64>(GuestAddress(addr)).unwrap_or(0))
        .collect()
}

/// What the lab's thread has done so far, shared with the thread that answers: the first
/// slices and the last, the console's first and last bytes.
#[derive(Debug, Default)]
struct Record {
    slices: Vec<SliceSeen>,
    total: u64,
    per_vm: [u64; 2],
    last: Option<SliceSeen>,
    max_slices: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    console_len: u64,
    head_cap: usize,
    tail_cap: usize,
    running: &'static str,
    tid: libc::pid_t,
    /// The thread's CPU clock when the call of `run_slice` under way started.
    slice_started: Option<Duration>,
}

impl Record {
    fn write(&mut self, mut bytes: &[u8]) {
        self.console_len += bytes.len() as u64;
        let room = self.head_cap.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..room]);
        bytes = &bytes[room..];
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > self.tail_cap {
            self.tail.drain(..self.tail.len() - self.tail_cap);
        }
    }

    /// Slice `at` (counted from 0), changed by `change`: in the first slices and as the last.
    fn update(&mut self, at: u64, change: impl Fn(&mut SliceSeen)) {
        if let Some(slice) = usize::try_from(at).ok().and_then(|at| self.slices.get_mut(at)) {
            change(slice);
        }
        if at + 1 == self.total
            && let Some(last) = &mut self.last
        {
            change(last);
        }
    }

    fn first_slices(&self) -> FirstSlices<SliceSeen> {
        FirstSlices {
            first: self.slices.clone(),
            total: self.total,
        }
    }

    fn console(&self) -> ConsoleSeen {
        ConsoleSeen {
            head: String::from_utf8_lossy(&self.head).into_owned(),
            tail: String::from_utf8_lossy(&self.tail).into_owned(),
            len: self.console_len,
        }
    }
}

type Shared = Arc<Mutex<Record>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Record> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The console `run_schedule` writes to: the record's.
struct RecordingConsole(Shared);

impl Write for RecordingConsole {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type RunSlice = fn(&mut GuestVm, Option<Duration>, &mut SliceTimer, &mut dyn Write) -> Result<SliceEnd, Lab6Error>;

/// What the probe's `run_slice` needs, on the lab's thread.
struct Slicing {
    /// The lab's `run_slice`.
    run_slice: RunSlice,
    shared: Shared,
    /// The addresses of the two `GuestVm`s the probe made.
    vms: [usize; 2],
    watch: Vec<u64>,
}

thread_local! {
    static SLICING: RefCell<Option<Slicing>> = const { RefCell::new(None) };
}

/// The `run_slice` the lab's loop is given: the lab's, with what it did recorded around it.
fn probe_run_slice(
    vm: &mut GuestVm,
    length: Option<Duration>,
    timer: &mut SliceTimer,
    console: &mut dyn Write,
) -> Result<SliceEnd, Lab6Error> {
    let slicing = SLICING.with(|slicing| {
        slicing
            .borrow()
            .as_ref()
            .map(|s| (s.run_slice, Arc::clone(&s.shared), s.vms, s.watch.clone()))
    });
    let Some((run_slice, shared, vms, watch)) = slicing else {
        return Err(Lab6Error::Timer(io::Error::other(
            "parts.run_slice was called on a thread other than run_schedule's",
        )));
    };
    let address = std::ptr::from_ref::<GuestVm>(vm) as usize;
    let at = {
        let mut record = lock(&shared);
        let console_at = record.console_len;
        let slice = SliceSeen {
            vm: vms.iter().position(|&a| a == address),
            length,
            before: seen(&vm.account),
            after: None,
            words_before: read_words(&vm.vm.memory, &watch),
            words_after: Vec::new(),
            cpu: Duration::ZERO,
            console: (console_at, console_at),
            ended: None,
        };
        if let Some(vm) = slice.vm {
            record.per_vm[vm] += 1;
        }
        if record.slices.len() < record.max_slices {
            record.slices.push(slice.clone());
        }
        record.last = Some(slice);
        record.total += 1;
        record.slice_started = Some(thread_cpu_time());
        record.total - 1
    };
    let cpu_before = thread_cpu_time();
    let ended = run_slice(vm, length, timer, console);
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    let after = seen(&vm.account);
    let words_after = read_words(&vm.vm.memory, &watch);
    let ended_seen = match &ended {
        Ok(SliceEnd::Timer) => Ok(EndSeen::Timer),
        Ok(SliceEnd::Console) => Ok(EndSeen::Console),
        Err(err) => Err(err.to_string()),
    };
    let mut record = lock(&shared);
    record.slice_started = None;
    let console_end = record.console_len;
    record.update(at, |slice| {
        slice.cpu = cpu;
        slice.after = Some(after);
        slice.words_after.clone_from(&words_after);
        slice.console.1 = console_end;
        slice.ended = Some(ended_seen.clone());
    });
    ended
}

fn lab_slice(slice: &Slice) -> LabSlice {
    LabSlice {
        vm: slice.vm,
        guest: slice.guest,
        exits: slice.exits,
        progress: slice.progress,
        ended_by: match slice.ended_by {
            SliceEnd::Timer => EndSeen::Timer,
            SliceEnd::Console => EndSeen::Console,
        },
    }
}

/// What the lab's thread found when `run_schedule` returned.
struct Returned {
    returned: Result<FirstSlices<LabSlice>, String>,
    accounts: [AccountSeen; 2],
    words: [Vec<u64>; 2],
    names: [u8; 2],
}

/// The lab's thread: the two VMs, then the lab's loop.
fn pair_and_loop(probe: &Probe, request: &Schedule, shared: &Shared) -> Result<Returned, LabFailure> {
    let labs = &probe.labs;
    let base = labs.base();
    let create = |name| {
        (labs.create_guest_vm)(&base, name, &request.image).map_err(|err| LabFailure {
            function: "create_guest_vm".to_owned(),
            error: err.to_string(),
        })
    };
    let mut vms = [create(request.names[0])?, create(request.names[1])?];
    let addresses = [
        std::ptr::from_ref::<GuestVm>(&vms[0]) as usize,
        std::ptr::from_ref::<GuestVm>(&vms[1]) as usize,
    ];
    SLICING.with(|slicing| {
        *slicing.borrow_mut() = Some(Slicing {
            run_slice: labs.run_slice,
            shared: Arc::clone(shared),
            vms: addresses,
            watch: request.watch.clone(),
        });
    });
    lock(shared).running = "run_schedule";
    let parts = Parts {
        next_slice: labs.next_slice,
        run_slice: probe_run_slice,
    };
    let mut console = RecordingConsole(Arc::clone(shared));
    let returned = (labs.run_schedule)(
        &parts,
        &mut vms,
        &policy(request.policy),
        request.duration,
        &mut console,
    );
    SLICING.with(|slicing| slicing.borrow_mut().take());
    Ok(Returned {
        returned: returned
            .map(|slices| FirstSlices {
                first: slices.iter().take(request.max_slices).map(lab_slice).collect(),
                total: slices.len() as u64,
            })
            .map_err(|err| err.to_string()),
        accounts: [seen(&vms[0].account), seen(&vms[1].account)],
        words: [
            read_words(&vms[0].vm.memory, &request.watch),
            read_words(&vms[1].vm.memory, &request.watch),
        ],
        names: [vms[0].name, vms[1].name],
    })
}

/// The CPU time so far of the thread whose CPU clock is `clock` (zero when it has ended).
fn cpu_time_of(clock: Option<libc::clockid_t>) -> Duration {
    let Some(clock) = clock else {
        return Duration::ZERO;
    };
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the answer; a clock that is gone gives an error, not UB.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or_default(),
        u32::try_from(now.tv_nsec).unwrap_or_default(),
    )
}

/// How long the thread `tid` of this process has waited for a CPU while it could run (the
/// scheduler's run delay, /proc's schedstat); zero where the kernel does not say. A thread
/// starved by a loaded host is not a loop that sleeps: the wall-clock limit leaves this time out.
fn run_delay_of(tid: libc::pid_t) -> Duration {
    if tid == 0 {
        return Duration::ZERO;
    }
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// A thread the probe gave up on keeps spinning until the process ends: it runs only when
/// nothing else wants the CPU from now on (an in-process test goes on beside it).
fn demote(tid: libc::pid_t) {
    if tid == 0 {
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a thread of this process, with a valid parameter; lowering
    // a thread's own policy needs no privilege, and a failure changes nothing.
    let _ = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
}

fn schedule(probe: &Probe, request: Schedule) -> Result<Result<ScheduleSeen, LabFailure>, String> {
    let shared: Shared = Arc::new(Mutex::new(Record {
        running: "create_guest_vm",
        max_slices: request.max_slices,
        head_cap: request.console_head,
        tail_cap: request.console_tail,
        ..Record::default()
    }));
    let (cpu_limit, wall_limit) = (request.cpu_limit, request.wall_limit);
    let (tx, rx) = channel();
    let on_thread = Arc::clone(&shared);
    let probe = probe.clone();
    // The lab's VMs and loop run on a thread of their own, named so the probe's hook records its
    // panics; one the probe gives up on is left behind with its VMs (the process ends it).
    let spawned = std::thread::Builder::new()
        .name("lab-schedule".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            lock(&on_thread).tid = unsafe { libc::gettid() };
            let _ = kvm_hello::vmm::take_last_panic();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pair_and_loop(&probe, &request, &on_thread)
            }));
            let outcome = outcome.map_err(|payload| {
                kvm_hello::vmm::take_last_panic().unwrap_or_else(|| {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                    LabPanic::from_message(&message, None)
                })
            });
            let _ = tx.send(outcome);
        })
        .map_err(|err| format!("cannot start a thread: {err}"))?;
    // The thread's CPU clock; `None` when the thread has ended already (its result is waiting).
    let clock = {
        use std::os::unix::thread::JoinHandleExt;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the handle's thread is not joined yet, so its pthread_t is valid; `clock` is a
        // valid place for the answer.
        let found = unsafe { libc::pthread_getcpuclockid(spawned.as_pthread_t(), &mut clock) };
        (found == 0).then_some(clock)
    };
    let started = Instant::now();
    let outcome = loop {
        // The wall clock counts only while the lab's thread runs or sleeps, not while it waits
        // for a CPU on a loaded host: a sleeping loop is stopped, a starved one is not failed.
        let tid = lock(&shared).tid;
        let (cpu, wall) = (cpu_time_of(clock), started.elapsed().saturating_sub(run_delay_of(tid)));
        if cpu >= cpu_limit || wall >= wall_limit {
            break None;
        }
        // CPU time grows no faster than the wall clock: no limit passes before this wait ends.
        let wait = (cpu_limit - cpu).min(wall_limit - wall).max(Duration::from_millis(1));
        match rx.recv_timeout(wait) {
            Ok(outcome) => break Some(outcome),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("lab code's thread ended without a result".into()),
        }
    };
    let Some(outcome) = outcome else {
        let (cpu, wall) = (cpu_time_of(clock), started.elapsed());
        let record = lock(&shared);
        demote(record.tid);
        return Ok(Ok(ScheduleSeen {
            slices: record.first_slices(),
            last: record.last.clone(),
            per_vm: record.per_vm,
            console: record.console(),
            returned: None,
            given_up: Some(GivenUp {
                running: record.running.to_owned(),
                cpu,
                wall,
                in_slice: record.slice_started.map(|started| cpu.saturating_sub(started)),
            }),
            accounts: None,
            words: None,
            names: None,
        }));
    };
    let _ = spawned.join();
    let finished = match outcome {
        Ok(finished) => finished,
        // Raised again on the answering thread, so the answer says what the lab's thread hit.
        Err(LabPanic::NotImplemented(stub)) => panic!("not yet implemented: {stub}"),
        Err(LabPanic::Other(message)) => std::panic::resume_unwind(Box::new(message)),
    };
    let record = lock(&shared);
    Ok(finished.map(|returned| ScheduleSeen {
        slices: record.first_slices(),
        last: record.last.clone(),
        per_vm: record.per_vm,
        console: record.console(),
        returned: Some(returned.returned),
        given_up: None,
        accounts: Some(returned.accounts),
        words: Some(returned.words),
        names: Some(returned.names),
    }))
}
