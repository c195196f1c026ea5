//! End to end: the student's VMM (`probe.vmm`, kvm-hello built from the labs) run as a program
//! on the judge's guest images. What it printed and how it ended go back as they were.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use grader_protocol::e2e::{RunVmm, VmmOutput, VmmRun};
use grader_protocol::{Envelope, Request};

use crate::{Handled, Probe, handle};

/// Answers the end-to-end requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    Some(match envelope.request.as_str() {
        RunVmm::NAME => handle(&envelope.body, |request: RunVmm| {
            let wait = Duration::from_millis(request.wait_ms);
            request.runs.iter().map(|run| run_vmm(probe, run, wait)).collect()
        }),
        _ => return None,
    })
}

/// A file of this process's for the image, removed when dropped.
struct ImageFile(PathBuf);

impl ImageFile {
    fn write(image: &[u8]) -> Result<ImageFile, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!("grader-guest-{}-{n}-{nanos}.bin", std::process::id()));
        // create_new: never through a file (or link) someone else put there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
        file.write_all(image)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        Ok(ImageFile(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// `VMM --guest FILE ARGS`, killed after `wait`.
fn run_vmm(probe: &Probe, run: &VmmRun, wait: Duration) -> Result<VmmOutput, String> {
    let image = ImageFile::write(&run.image)?;
    let (program, leading) = &probe.vmm;
    let mut child = Command::new(program)
        .args(leading)
        .arg("--guest")
        .arg(image.path())
        .args(&run.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let started = Instant::now();
    let (status, killed) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status.code(), false),
            Ok(None) if started.elapsed() >= wait => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(err) => return Err(format!("cannot wait for {}: {err}", program.display())),
        }
    };
    Ok(VmmOutput {
        status,
        killed,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}
