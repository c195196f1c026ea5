//! The scoreboard (like xv6's `make grade`) and the Gradescope report.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::Part;
use crate::runner::CheckResult;

/// Points scored and possible.
pub fn score(results: &[CheckResult]) -> (u32, u32) {
    results.iter().fold((0, 0), |(got, max), r| {
        (
            got + if r.outcome.passed() { r.check.points } else { 0 },
            max + r.check.points,
        )
    })
}

/// The scoreboard, part by part.
pub fn text(results: &[CheckResult]) -> String {
    let mut out = String::new();
    let mut part: Option<Part> = None;
    for (i, result) in results.iter().enumerate() {
        if part != Some(result.check.part) {
            part = Some(result.check.part);
            let _ = writeln!(out, "\n{}", result.check.part.title());
        }
        let points = if result.outcome.passed() {
            result.check.points
        } else {
            0
        };
        let mark = if result.outcome.passed() { "ok  " } else { "FAIL" };
        let _ = writeln!(
            out,
            "  {mark} [{points}/{}] {}  ({})",
            result.check.points, result.check.title, result.check.name
        );
        if !result.outcome.passed() {
            let _ = writeln!(out, "         {}", result.outcome.message());
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
    out
}

/// Gradescope's results.json: `score` and one entry per check.
pub fn gradescope(results: &[CheckResult]) -> Value {
    let (got, max) = score(results);
    let tests: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "name": format!("{}: {}", r.check.part.key(), r.check.title),
                "number": r.check.name,
                "score": if r.outcome.passed() { r.check.points } else { 0 },
                "max_score": r.check.points,
                "status": if r.outcome.passed() { "passed" } else { "failed" },
                "output": r.outcome.message(),
            })
        })
        .collect();
    json!({"score": got, "max_score": max, "tests": tests})
}

/// Every result as JSON, for scripts and the kit's own tests.
pub fn json_lines(results: &[CheckResult]) -> Value {
    let checks: Vec<Value> = results
        .iter()
        .map(|r| json!({"check": r.check.name, "outcome": r.outcome.kind(), "points": r.check.points, "message": r.outcome.message()}))
        .collect();
    Value::from(checks)
}
