//! What the judge and the probe say to each other.
//!
//! A check is split in two. The *judge* (the `grader` binary) draws the check's inputs from its
//! seed, knows the right answer from how it built them, and writes the message; it never links
//! or loads lab code. The *probe* (`grader-probe`, which links the labs) runs jailed: it reads one
//! [`Envelope`] on stdin, calls the lab functions on the inputs it names, and writes one
//! [`Answer`] on descriptor [`ANSWER_FD`]: raw observations (values returned, bytes of guest
//! memory, registers, what the guest printed, the exits KVM reported), never a verdict. Lab code
//! shares the probe's process, so it can forge an answer; a forged answer passes only when it is
//! the right answer to this run's random inputs.
//!
//! Each request is a type of its own (one module per lab) that names its reply type, so both
//! sides agree on the shape of every exchange at compile time.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod e2e;
pub mod lab0;
pub mod lab1;
pub mod lab2;
pub mod lab3;
pub mod lab4;
pub mod lab5;
pub mod lab6;
pub mod lab7;

/// The probe's descriptor for its answer: a pipe only the judge reads.
pub const ANSWER_FD: i32 = 3;
/// The argument that makes `grader-probe` act as kvm-hello built from the labs (`grader-probe vmm
/// ARGS`), so the end-to-end checks run the student's VMM without a second build.
pub const VMM_ARG: &str = "vmm";

/// One kind of request: its name on the wire and the type of its reply.
pub trait Request: Serialize + DeserializeOwned {
    /// The name that routes it in the probe.
    const NAME: &'static str;
    /// What the probe observed.
    type Reply: Serialize + DeserializeOwned;
}

/// A request as it travels: its name and its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// `Request::NAME`.
    pub request: String,
    /// The request itself.
    pub body: serde_json::Value,
}

impl Envelope {
    /// Wraps a request.
    pub fn of<R: Request>(request: &R) -> Envelope {
        Envelope {
            request: R::NAME.to_owned(),
            body: serde_json::to_value(request).expect("a request is plain data"),
        }
    }
}

/// How the probe's work on one request ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// The lab functions returned: what was observed (the request's `Reply`).
    Reply(serde_json::Value),
    /// Lab code reached a `todo!` stub: the stub's text (`lab2 translate (labs/...; book: ...)`).
    NotImplemented(String),
    /// Lab code panicked: its message.
    Panicked(String),
    /// The probe could not do what was asked (a bad request, no memory): not the lab's fault.
    Refused(String),
}

/// A lab function's result as observed: its value, or its error's text.
pub type Outcome<T> = Result<T, String>;

/// Every nonzero 8-byte word of guest memory, by guest physical address: what a lab wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Words {
    /// (address, value), in address order.
    pub words: Vec<(u64, u64)>,
    /// Set when there were more nonzero words than the probe sends (`MAX_WORDS`).
    pub more: bool,
}

impl Words {
    /// The most words an answer carries: far more than any lab writes on purpose.
    pub const MAX_WORDS: usize = 4096;

    /// The word at `addr` (0 where nothing was written).
    pub fn at(&self, addr: u64) -> u64 {
        self.words
            .binary_search_by_key(&addr, |&(a, _)| a)
            .map_or(0, |i| self.words[i].1)
    }
}
