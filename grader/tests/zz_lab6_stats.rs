//! THROWAWAY: measures lab 6 runs (not committed).
#![cfg(feature = "solution")]
use grader::checks::lab6::worker;
use grader_probe::{Labs, Probe};
use grader_protocol::lab6::*;
use grader_protocol::{Answer, Envelope};
use std::time::Duration;

fn run(policy: PolicySpec, duration: Duration, w: &worker::Worker) -> ScheduleSeen {
    let probe = Probe {
        labs: Labs::BUILT,
        vmm: (env!("CARGO_BIN_EXE_grader-probe").into(), vec!["vmm".into()]),
    };
    let req = Schedule {
        image: w.image.clone(),
        names: [b'A', b'B'],
        policy,
        duration,
        watch: vec![0x508, 0x510, 0x518],
        cpu_limit: duration + Duration::from_secs(2),
        wall_limit: Duration::from_secs(20),
        max_slices: 160,
        console_head: 24 * 1024,
        console_tail: 16 * 1024,
    };
    let input = serde_json::to_string(&Envelope::of(&req)).unwrap();
    match grader_probe::answer(&probe, &input) {
        Answer::Reply(v) => {
            let r: Result<ScheduleSeen, grader_protocol::lab1::LabFailure> = serde_json::from_value(v).unwrap();
            r.unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stats() {
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let kind = std::env::var("KIND").unwrap_or("state".into());
    for k in 0..n {
        let (policy, duration, w) = match kind.as_str() {
            "state" => (
                PolicySpec::RoundRobin {
                    quantum: Duration::from_millis(3 + (k as u64 % 4)),
                },
                Duration::from_millis(250),
                worker::worker(k as u64 + 1, 16 + (k as u32 * 7) % 49, 1 + k as u32 % 3, u32::MAX),
            ),
            "quiet" => (
                PolicySpec::RoundRobin {
                    quantum: Duration::from_millis(8 + (k as u64 % 12)),
                },
                Duration::from_millis(300),
                worker::worker(k as u64 + 1, 32 + (k as u32 * 7) % 65, 1, 4 + k as u32 % 13),
            ),
            "coop" => (
                PolicySpec::Cooperative,
                Duration::from_millis(20),
                worker::worker(k as u64 + 1, 16 + (k as u32 * 7) % 49, 1 + k as u32 % 3, u32::MAX),
            ),
            _ => panic!(),
        };
        let seen = run(policy, duration, &w);
        let slices = &seen.slices.first;
        let mut max_bytes = 0;
        let mut ratios = vec![];
        let mut over = vec![];
        for s in slices {
            let a = s.after.unwrap();
            max_bytes = max_bytes.max(s.console.1 - s.console.0);
            let g = a.guest_time.saturating_sub(s.before.guest_time);
            ratios.push(g.as_secs_f64() / s.cpu.as_secs_f64());
            if let Some(l) = s.length {
                over.push((s.cpu.as_secs_f64() - l.as_secs_f64()) * 1e3);
            }
        }
        ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
        over.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let tail_a = seen.console.tail.contains("[A]");
        let tail_b = seen.console.tail.contains("[B]");
        eprintln!(
            "{kind} {k}: slices {} console {} max/slice {} tailA {tail_a} tailB {tail_b} guest/cpu min {:.3} med {:.3} late(ms) min {:.2} max {:.2} progress {:?}",
            seen.slices.total,
            seen.console.len,
            max_bytes,
            ratios[0],
            ratios[ratios.len() / 2],
            over.first().copied().unwrap_or(0.0),
            over.last().copied().unwrap_or(0.0),
            seen.words.as_ref().map(|w| [w[0][0], w[1][0]])
        );
    }
}
