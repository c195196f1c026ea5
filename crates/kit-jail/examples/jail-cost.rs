//! Measures the cost of starting a program jailed against starting it unjailed:
//! `cargo run --release -p kit-jail --example jail-cost -- [RUNS] [PROGRAM [ARGS...]]`
//! (default: 200 runs of `/usr/bin/true`). Prints the mean and the median wall-clock time of one
//! start-to-exit, each way.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(200, |runs| runs.parse().expect("RUNS is a number"));
    let program = args.next().unwrap_or_else(|| "/usr/bin/true".to_owned());
    let rest: Vec<String> = args.collect();
    let jail = match kit_jail::Jail::detect() {
        Ok(jail) => jail,
        Err(err) => {
            eprintln!("jail-cost: {err}");
            std::process::exit(2);
        }
    };
    let dir = std::path::Path::new(&program)
        .parent()
        .map(std::path::Path::to_path_buf);
    let unjailed = time(runs, || {
        let mut command = Command::new(&program);
        command.args(&rest);
        command
    });
    let jailed = time(runs, || {
        let mut builder = jail.command(&program).args(&rest).kvm(true);
        if let Some(dir) = dir.as_ref().filter(|dir| !dir.starts_with("/usr")) {
            builder = builder.read_only(dir);
        }
        builder.build().expect("build the jailed command")
    });
    println!("{program} {}: {runs} runs", rest.join(" "));
    println!("  unjailed: mean {:?}, median {:?}", unjailed.0, unjailed.1);
    println!("  jailed:   mean {:?}, median {:?}", jailed.0, jailed.1);
}

/// Mean and median of `runs` start-to-exit times (building the command included).
fn time(runs: usize, mut command: impl FnMut() -> Command) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = command()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run");
            assert!(status.success(), "the program failed: {status}");
            started.elapsed()
        })
        .collect();
    times.sort();
    (times.iter().sum::<Duration>() / runs as u32, times[runs / 2])
}
