//! The scoreboard (like xv6's `make grade`) and the Gradescope report. A check this host could
//! not run counts neither in the score nor in the maximum; one banner line says so.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::Part;
use crate::runner::{CheckResult, Suite};

/// Points scored and possible (checks not run count in neither).
pub fn score(results: &[CheckResult]) -> (u32, u32) {
    results
        .iter()
        .filter(|r| !r.outcome.not_run())
        .fold((0, 0), |(got, max), r| {
            (
                got + if r.outcome.passed() { r.check.points } else { 0 },
                max + r.check.points,
            )
        })
}

/// The banner line about checks this host could not run, if any.
pub fn banner(suite: &Suite) -> Option<String> {
    let not_run = suite.results.iter().filter(|r| r.outcome.not_run()).count();
    (not_run > 0).then(|| {
        format!(
            "{not_run} check(s) not run on this host, counted neither in the score nor in the maximum: {}",
            suite.host_limits.join("; ")
        )
    })
}

/// The scoreboard, part by part.
pub fn text(suite: &Suite) -> String {
    let results = &suite.results;
    let mut out = String::new();
    if let Some(banner) = banner(suite) {
        let _ = writeln!(out, "NOTE: {banner}");
    }
    let mut part: Option<Part> = None;
    for (i, result) in results.iter().enumerate() {
        if part != Some(result.check.part) {
            part = Some(result.check.part);
            let _ = writeln!(out, "\n{}", result.check.part.title());
        }
        let (mark, points) = if result.outcome.passed() {
            ("ok  ", format!("{}/{}", result.check.points, result.check.points))
        } else if result.outcome.not_run() {
            ("--  ", "not run".to_owned())
        } else {
            ("FAIL", format!("0/{}", result.check.points))
        };
        let hidden = if result.check.hidden { " (hidden)" } else { "" };
        let _ = writeln!(
            out,
            "  {mark} [{points}] {}  ({}){hidden}",
            result.check.title, result.check.name
        );
        if !result.outcome.passed() {
            let _ = writeln!(out, "         {}", result.outcome.message());
        }
        // A check that ran and failed offers its hints (rules.rs), rustlings-like.
        if matches!(result.outcome.kind(), "failed" | "timed_out") && crate::rules::rule_of(result.check.name).is_some()
        {
            let _ = writeln!(out, "         hint: cargo grade --hint {}", result.check.name);
        }
        let last_of_part = results
            .get(i + 1)
            .is_none_or(|next| next.check.part != result.check.part);
        if last_of_part {
            let of_part: Vec<CheckResult> = results
                .iter()
                .filter(|r| r.check.part == result.check.part)
                .cloned()
                .collect();
            let (got, max) = score(&of_part);
            let _ = writeln!(out, "  {}: {got}/{max}", result.check.part.key());
        }
    }
    let (got, max) = score(results);
    let _ = writeln!(out, "\nScore: {got}/{max}");
    if let Some(line) = withheld() {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "Seed: {} (cargo grade --seed {} repeats these inputs)",
        suite.seed, suite.seed
    );
    out
}

/// The line about the hidden checks this copy of the kit leaves out, if it leaves any out.
pub fn withheld() -> Option<String> {
    let withheld = crate::checks::hidden::WITHHELD;
    (withheld.checks > 0).then(|| {
        format!(
            "Hidden: {} more check(s), {} points, run only in official grading (not in this copy; book: Grading)",
            withheld.checks, withheld.points
        )
    })
}

/// Gradescope's results.json: `score`, the run's `output` (seed, banner) and one entry per check;
/// a check not run is listed with 0 of 0 points and the reason.
pub fn gradescope(suite: &Suite) -> Value {
    let (got, max) = score(&suite.results);
    let tests: Vec<Value> = suite
        .results
        .iter()
        .map(|r| {
            let (score, max_score) = if r.outcome.not_run() {
                (0, 0)
            } else if r.outcome.passed() {
                (r.check.points, r.check.points)
            } else {
                (0, r.check.points)
            };
            let mut test = json!({
                "name": format!("{}: {}", r.check.part.key(), r.check.title),
                "number": r.check.name,
                "score": score,
                "max_score": max_score,
                "output": r.outcome.message(),
            });
            // A check not run is neither passed nor failed: Gradescope shows it without a status.
            if !r.outcome.not_run() {
                test["status"] = Value::from(if r.outcome.passed() { "passed" } else { "failed" });
            }
            test
        })
        .collect();
    let mut output = format!(
        "Seed: {} (cargo grade --seed {} repeats these inputs)",
        suite.seed, suite.seed
    );
    if let Some(banner) = banner(suite) {
        output = format!("{banner}\n{output}");
    }
    json!({"score": got, "max_score": max, "output": output, "tests": tests})
}

/// Every result as JSON, for scripts and the kit's own tests: one object per check.
pub fn json_lines(suite: &Suite) -> Value {
    let checks: Vec<Value> = suite
        .results
        .iter()
        .map(|r| {
            json!({
                "check": r.check.name,
                "part": r.check.part.key(),
                "outcome": r.outcome.kind(),
                "points": r.check.points,
                "score": if r.outcome.passed() { r.check.points } else { 0 },
                "message": r.outcome.message(),
                // The check whose failure explains this one's, when the message points to it.
                "see": crate::checks::pointed_to(&r.outcome.message()),
                "seed": suite.seed,
                "check_seed": r.seed,
                "hidden": r.check.hidden,
            })
        })
        .collect();
    Value::from(checks)
}
