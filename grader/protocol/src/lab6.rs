//! Lab 6: the scheduler's decision on the judge's accounts, and two VMs of the judge's worker
//! guest scheduled by the lab's loop, observed slice by slice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Request;
use crate::lab1::LabFailure;

/// A scheduling policy, as lab 6's `Policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicySpec {
    /// Switch at every console exit.
    Cooperative,
    /// Take turns, one quantum each.
    RoundRobin {
        /// The slice length.
        quantum: Duration,
    },
    /// Proportional shares.
    Weighted {
        /// The slice length.
        quantum: Duration,
        /// Percentages of VM 0 and VM 1.
        shares: [u32; 2],
    },
}

impl PolicySpec {
    /// `cooperative`, `round-robin`, `weighted`: the names kvm-hello's command line uses.
    pub fn name(&self) -> &'static str {
        match self {
            PolicySpec::Cooperative => "cooperative",
            PolicySpec::RoundRobin { .. } => "round-robin",
            PolicySpec::Weighted { .. } => "weighted",
        }
    }

    /// The quantum, when the policy has one.
    pub fn quantum(&self) -> Option<Duration> {
        match *self {
            PolicySpec::Cooperative => None,
            PolicySpec::RoundRobin { quantum } | PolicySpec::Weighted { quantum, .. } => Some(quantum),
        }
    }
}

/// One VM's account, as lab 6's `Account` holds it (its exits as one total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSeen {
    /// Guest time.
    pub guest_time: Duration,
    /// Slices run.
    pub slices: u64,
    /// Exits, all reasons together.
    pub exits: u64,
    /// Exits by reason, as lab 4's `ExitCounts`: OUT, IN, HLT, MMIO, triple fault, other.
    #[serde(default)]
    pub by_reason: [u64; 6],
    /// The progress the lab read.
    pub progress: u64,
}

/// One question to `next_slice`: the policy, the two accounts, the VM that ran last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SliceQuestion {
    /// The policy.
    pub policy: PolicySpec,
    /// The accounts of VM 0 and VM 1 (exits are given as that many console OUTs).
    pub accounts: [AccountSeen; 2],
    /// The VM of the previous slice.
    pub last: Option<usize>,
}

/// The lab's `next_slice` on each question, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextSlice {
    /// The questions.
    pub questions: Vec<SliceQuestion>,
}

/// What `next_slice` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoiceSeen {
    /// The VM.
    pub vm: usize,
    /// The length.
    pub length: Option<Duration>,
}

impl Request for NextSlice {
    const NAME: &'static str = "lab6.next_slice";
    type Reply = Vec<ChoiceSeen>;
}

/// Two VMs of the judge's `image`, made by the lab's `create_guest_vm` with `names[0]`, then
/// `names[1]`, then the lab's `run_schedule` of the pair under `policy` for `duration`, on a
/// thread of the probe's that is given up when it has used `cpu_limit` of its CPU time or run
/// `wall_limit`. The probe hands `run_schedule` a `run_slice` of its own that calls the lab's and
/// records each slice; `watch` are the guest physical addresses of words (u64) it reads in the
/// slice's VM before and after each slice, and in both VMs at the end. An answer has a size
/// limit, and a fast host runs many slices and prints much: the probe sends the first
/// `max_slices` slices (of its record and of the lab's) and the first `console_head` and last
/// `console_tail` bytes of the console, with their totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    /// The worker guest both VMs run.
    pub image: Vec<u8>,
    /// The names of VM 0 and VM 1.
    pub names: [u8; 2],
    /// The policy.
    pub policy: PolicySpec,
    /// The two VMs' guest time together.
    pub duration: Duration,
    /// The words read around each slice.
    pub watch: Vec<u64>,
    /// The lab's thread's CPU time after which the probe gives up on it.
    pub cpu_limit: Duration,
    /// The wall-clock time after which the probe gives up on it.
    pub wall_limit: Duration,
    /// The most slices an answer holds.
    pub max_slices: usize,
    /// The console's first bytes an answer holds.
    pub console_head: usize,
    /// The console's last bytes an answer holds.
    pub console_tail: usize,
}

/// Why a slice ended, as `run_slice` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndSeen {
    /// `SliceEnd::Timer`.
    Timer,
    /// `SliceEnd::Console`.
    Console,
}

/// One call of `run_slice`, as the probe saw it around the lab's function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSeen {
    /// Which VM of the pair it was given (`None`: neither of the two the probe made).
    pub vm: Option<usize>,
    /// The length it was given.
    pub length: Option<Duration>,
    /// That VM's account before the call.
    pub before: AccountSeen,
    /// Its account after (`None`: the call had not returned).
    pub after: Option<AccountSeen>,
    /// The watched words of that VM before the call.
    pub words_before: Vec<u64>,
    /// The watched words after (empty when it had not returned).
    pub words_after: Vec<u64>,
    /// The calling thread's CPU time inside the call.
    pub cpu: Duration,
    /// Where the console stood (bytes written so far) when the call started, and when it ended.
    pub console: (u64, u64),
    /// What it returned (`Err`: the error's text); `None`: it had not returned.
    pub ended: Option<Result<EndSeen, String>>,
}

/// One slice as `run_schedule` returned it (lab 6's `Slice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSlice {
    /// The VM.
    pub vm: usize,
    /// Its guest time.
    pub guest: Duration,
    /// Its exits.
    pub exits: u64,
    /// The progress at its end.
    pub progress: u64,
    /// Why it ended.
    pub ended_by: EndSeen,
}

/// How far the lab's thread had got when the probe gave up on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenUp {
    /// The lab function it was in: `create_guest_vm` or `run_schedule`.
    pub running: String,
    /// Its CPU time then.
    pub cpu: Duration,
    /// The wall-clock time since it started.
    pub wall: Duration,
    /// The CPU time the thread had spent in a call of `run_slice` still under way.
    pub in_slice: Option<Duration>,
}

/// The first slices of a list, and how many it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstSlices<T> {
    /// The first `max_slices`, in order.
    pub first: Vec<T>,
    /// How many there are.
    pub total: u64,
}

/// What `run_schedule` wrote to its console: its first and last bytes (as text, a byte that is
/// not UTF-8 replaced), and how many bytes it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSeen {
    /// Its first `console_head` bytes.
    pub head: String,
    /// Its last `console_tail` bytes (empty when the head holds them all).
    pub tail: String,
    /// How many bytes it wrote.
    pub len: u64,
}

/// What `Schedule` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSeen {
    /// The calls of `run_slice`, in order.
    pub slices: FirstSlices<SliceSeen>,
    /// The last call of `run_slice` (unfinished when the probe gave up during it).
    pub last: Option<SliceSeen>,
    /// The calls of `run_slice` with VM 0 and with VM 1.
    pub per_vm: [u64; 2],
    /// What `run_schedule` wrote to its console.
    pub console: ConsoleSeen,
    /// What `run_schedule` returned (`Err`: the error's text); `None`: the probe gave up.
    pub returned: Option<Result<FirstSlices<LabSlice>, String>>,
    /// Set when the probe gave up.
    pub given_up: Option<GivenUp>,
    /// The two VMs' accounts at the end (when it returned).
    pub accounts: Option<[AccountSeen; 2]>,
    /// The two VMs' watched words at the end (when it returned).
    pub words: Option<[Vec<u64>; 2]>,
    /// The names the two VMs' `GuestVm` hold.
    pub names: Option<[u8; 2]>,
}

impl Request for Schedule {
    const NAME: &'static str = "lab6.schedule";
    type Reply = Result<ScheduleSeen, LabFailure>;
}
