//! The picture of a schedule run (`kvm-hello --lab schedule --svg DIR`): time on the x axis, one
//! row per VM, one rectangle per slice, drawn from the `--json` report alone, so that a picture
//! in the book can be redrawn from the JSON committed beside it.

use std::fmt::Write;

use serde_json::Value;

/// The picture's size: as wide as the book's column allows.
const WIDTH: u32 = 720;
const HEIGHT: u32 = 190;
/// Where the rows start and end.
const LEFT: u32 = 40;
const RIGHT: u32 = 700;
/// The rows: A's top, B's top, their height.
const ROW_TOP: [u32; 2] = [72, 114];
const ROW_HEIGHT: u32 = 32;
/// The axis' line.
const AXIS_Y: u32 = 160;
/// The wall-clock window shown, from the loop's start.
const WINDOW_US: u64 = 200_000;
/// A tick on the axis every this many microseconds.
const TICK_US: u64 = 20_000;
/// The slices' colours, by VM.
const FILL: [&str; 2] = ["#9cc3e6", "#f4b183"];
/// Text sizes: the title, labels.
const TITLE_SIZE: u32 = 14;
const LABEL_SIZE: u32 = 12;
/// A monospace glyph is about 0.6 em wide: a label fits in a slice this many px per character.
const LABEL_PX_PER_CHAR: u32 = 8;

/// The file `--svg DIR` writes for a policy.
pub fn file_name(policy: &str) -> String {
    format!("schedule-{policy}.svg")
}

/// The SVG of the first `WINDOW_US` of the run in `report` (kvm-hello's `--json` report of
/// `--lab schedule`). None when the report has no schedule.
pub fn svg(report: &Value) -> Option<String> {
    let schedule = report.get("schedule")?;
    let slices = schedule["slices"].as_array()?;
    let vms = schedule["vms"].as_array()?;
    let name = |vm: usize| vms.get(vm).and_then(|v| v["name"].as_str()).unwrap_or("?").to_owned();
    let share = |vm: usize| 100.0 * vms.get(vm).and_then(|v| v["share"].as_f64()).unwrap_or(0.0);
    let end_us = slices
        .iter()
        .map(|s| {
            s["start_us"]
                .as_u64()
                .unwrap_or(0)
                .saturating_add(s["wall_us"].as_u64().unwrap_or(0))
        })
        .max()
        .unwrap_or(0);
    let window = WINDOW_US.min(end_us.max(1));
    let x_of = |us: u64| LEFT + ((us.min(window) * u64::from(RIGHT - LEFT)) / window) as u32;

    let mut body = String::new();
    let policy = schedule["policy"].as_str().unwrap_or("?");
    let how = match (schedule["quantum_us"].as_u64(), schedule["shares"].as_array()) {
        (Some(q), Some(shares)) => format!(
            ", quantum {} ms, shares {}:{}",
            q / 1000,
            shares[0].as_u64().unwrap_or(0),
            shares.get(1).and_then(Value::as_u64).unwrap_or(0)
        ),
        (Some(q), None) => format!(", quantum {} ms", q / 1000),
        _ => String::new(),
    };
    let title = format!(
        "{policy}{how}: {} {:.1}%, {} {:.1}% of guest time",
        name(0),
        share(0),
        name(1),
        share(1)
    );
    text(&mut body, 16, 26, TITLE_SIZE, "bold", &title);
    let subtitle = format!(
        "the first {} ms of the loop, wall clock; one box per slice, its guest time in ms",
        window / 1000
    );
    text(&mut body, 16, 50, LABEL_SIZE, "normal", &subtitle);
    for (vm, top) in ROW_TOP.iter().enumerate() {
        text(&mut body, 16, top + 21, LABEL_SIZE, "bold", &name(vm));
    }
    for slice in slices {
        let vm = slice["vm"].as_u64().unwrap_or(0).min(1) as usize;
        let start = slice["start_us"].as_u64().unwrap_or(0);
        if start >= window {
            continue;
        }
        let end = start.saturating_add(slice["wall_us"].as_u64().unwrap_or(0));
        let (x, x_end) = (x_of(start), x_of(end));
        let w = (x_end - x).max(1);
        let _ = writeln!(
            body,
            r##"<rect x="{x}" y="{}" width="{w}" height="{ROW_HEIGHT}" fill="{}" stroke="#333" stroke-width="0.5"/>"##,
            ROW_TOP[vm], FILL[vm]
        );
        let label = format!("{:.1}", slice["guest_us"].as_u64().unwrap_or(0) as f64 / 1000.0);
        if w >= LABEL_PX_PER_CHAR * label.len() as u32 + 4 {
            text(&mut body, x + 3, ROW_TOP[vm] + 21, LABEL_SIZE, "normal", &label);
        }
    }
    let _ = writeln!(
        body,
        r##"<line x1="{LEFT}" y1="{AXIS_Y}" x2="{RIGHT}" y2="{AXIS_Y}" stroke="#333"/>"##
    );
    let mut tick = 0;
    while tick <= window {
        let x = x_of(tick);
        let _ = writeln!(
            body,
            r##"<line x1="{x}" y1="{AXIS_Y}" x2="{x}" y2="{}" stroke="#333"/>"##,
            AXIS_Y + 5
        );
        let label = if tick + TICK_US > window {
            format!("{} ms", tick / 1000)
        } else {
            (tick / 1000).to_string()
        };
        let x_label = x.saturating_sub(4).min(WIDTH - LABEL_PX_PER_CHAR * label.len() as u32);
        text(&mut body, x_label, AXIS_Y + 20, LABEL_SIZE, "normal", &label);
        tick += TICK_US;
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"monospace\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    ))
}

fn text(body: &mut String, x: u32, y: u32, size: u32, weight: &str, text: &str) {
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let _ = writeln!(
        body,
        r#"<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}">{escaped}</text>"#
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(slices: Value) -> Value {
        json!({"schedule": {
            "policy": "round-robin", "quantum_us": 10_000, "shares": null,
            "vms": [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}],
            "slices": slices,
        }})
    }

    #[test]
    fn a_report_without_a_schedule_draws_nothing() {
        assert_eq!(svg(&json!({"mode": "long"})), None);
    }

    #[test]
    fn each_slice_in_the_window_is_a_box_in_its_vms_row() {
        let drawn = svg(&report(json!([
            {"vm": 0, "start_us": 0, "wall_us": 10_000, "guest_us": 10_000},
            {"vm": 1, "start_us": 10_000, "wall_us": 10_000, "guest_us": 9_500},
            {"vm": 0, "start_us": 900_000, "wall_us": 10_000, "guest_us": 10_000},
        ])))
        .unwrap();
        assert_eq!(
            drawn.matches("<rect x=").count(),
            2,
            "the slice past 200 ms is left out: {drawn}"
        );
        assert!(drawn.contains(&format!(r#"y="{}""#, ROW_TOP[1])) && drawn.contains(">9.5</text>"));
        assert!(drawn.contains("round-robin, quantum 10 ms: A 50.0%, B 50.0% of guest time"));
    }

    #[test]
    fn any_values_draw_within_the_picture() {
        let drawn = svg(&report(json!([
            {"vm": 7, "start_us": 0, "wall_us": u64::MAX, "guest_us": u64::MAX},
            {"vm": 0, "start_us": u64::MAX, "wall_us": u64::MAX, "guest_us": 0},
        ])))
        .unwrap();
        for x in drawn.split(" x=\"").skip(1) {
            let x: u32 = x.split('"').next().unwrap().parse().unwrap();
            assert!(x <= WIDTH, "x = {x} in {drawn}");
        }
    }
}
