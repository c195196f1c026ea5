//! End to end: the student's VMM run as a program on the judge's guests.

use serde::{Deserialize, Serialize};

use crate::Request;

/// Run the VMM (`grader-probe vmm`, kvm-hello built from the labs) once per entry of `runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunVmm {
    /// The runs, in this order.
    pub runs: Vec<VmmRun>,
    /// How long one run may take, in milliseconds of wall-clock time, before it is killed.
    pub wait_ms: u64,
}

impl Request for RunVmm {
    const NAME: &'static str = "e2e.run_vmm";
    type Reply = Vec<VmmOutput>;
}

/// One run: the probe writes `image` to a file of its own and runs `VMM --guest FILE ARGS`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmRun {
    /// The guest image.
    pub image: Vec<u8>,
    /// kvm-hello's arguments after `--guest FILE`.
    pub args: Vec<String>,
}

/// What the VMM's process did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmOutput {
    /// Its exit status (`None`: ended by a signal, or killed after `wait_ms`).
    pub status: Option<i32>,
    /// Set when it was killed after `wait_ms`.
    pub killed: bool,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}
