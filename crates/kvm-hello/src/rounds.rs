//! The picture of a move (`kvm-hello --lab migrate --svg DIR`): one bar per round, its height the
//! pages sent, the stop-and-copy round in its own colour, the downtime in the title. Drawn from the
//! `--json` report alone, so that a picture in the book can be redrawn from the JSON beside it.

use std::fmt::Write;

use serde_json::Value;

/// The file `--svg DIR` writes.
pub const FILE_NAME: &str = "migration-rounds.svg";
/// The picture's size.
const WIDTH: u32 = 720;
const HEIGHT: u32 = 260;
/// The plot: left edge, right edge, the bars' base line and their tallest height.
const LEFT: u32 = 60;
const RIGHT: u32 = 700;
const BASE_Y: u32 = 220;
const PLOT_HEIGHT: u32 = 140;
/// A bar's width at most, and the gap between two.
const MAX_BAR: u32 = 60;
const GAP: u32 = 10;
/// Pre-copy rounds, stop-and-copy.
const FILL: [&str; 2] = ["#9cc3e6", "#f4b183"];
const TITLE_SIZE: u32 = 14;
const LABEL_SIZE: u32 = 12;

/// The SVG of the rounds in `report` (kvm-hello's `--json` report of `--lab migrate`). None when
/// the report has no move.
pub fn svg(report: &Value) -> Option<String> {
    let migration = report.get("migration")?;
    if migration["moved"] != Value::Bool(true) {
        return None;
    }
    let rounds = migration["rounds"].as_array()?;
    let stop_copy = migration["stop_copy_pages"].as_u64().unwrap_or(0);
    let guest_pages = migration["guest_pages"].as_u64().unwrap_or(1).max(1);
    let mut bars: Vec<(String, u64, usize)> = rounds
        .iter()
        .map(|r| {
            (
                format!("{}", r["round"].as_u64().unwrap_or(0)),
                r["pages"].as_u64().unwrap_or(0),
                0,
            )
        })
        .collect();
    bars.push(("stop".to_owned(), stop_copy, 1));
    let tallest = bars.iter().map(|b| b.1).max().unwrap_or(1).max(guest_pages);
    let count = bars.len() as u32;
    let bar = ((RIGHT - LEFT) / count).saturating_sub(GAP).clamp(1, MAX_BAR);

    let mut body = String::new();
    let title = format!(
        "seed {}, dirty rate {}: {} pre-copy rounds, {} pages sent for {}, downtime {:.2} ms",
        migration["seed"].as_u64().unwrap_or(0),
        migration["dirty_rate"].as_u64().unwrap_or(0),
        rounds.len(),
        migration["total_pages"].as_u64().unwrap_or(0),
        guest_pages,
        migration["downtime_us"].as_u64().unwrap_or(0) as f64 / 1000.0
    );
    text(&mut body, 16, 26, TITLE_SIZE, "bold", &title);
    text(
        &mut body,
        16,
        48,
        LABEL_SIZE,
        "normal",
        "pages sent per round; the last bar is the stop-and-copy round (the guest is stopped)",
    );
    let y_of =
        |pages: u64| BASE_Y - ((u128::from(pages.min(tallest)) * u128::from(PLOT_HEIGHT)) / u128::from(tallest)) as u32;
    // The guest's size, as a dashed line.
    let guest_y = y_of(guest_pages);
    let _ = writeln!(
        body,
        r##"<line x1="{LEFT}" y1="{guest_y}" x2="{RIGHT}" y2="{guest_y}" stroke="#999" stroke-dasharray="4 3"/>"##
    );
    text(
        &mut body,
        4,
        guest_y + 4,
        LABEL_SIZE,
        "normal",
        &guest_pages.to_string(),
    );
    for (i, (label, pages, kind)) in bars.iter().enumerate() {
        let x = LEFT + GAP / 2 + i as u32 * (bar + GAP);
        let y = y_of(*pages);
        let h = (BASE_Y - y).max(1);
        let _ = writeln!(
            body,
            r##"<rect x="{x}" y="{}" width="{bar}" height="{h}" fill="{}" stroke="#333" stroke-width="0.5"/>"##,
            BASE_Y - h,
            FILL[*kind]
        );
        text(
            &mut body,
            x,
            (BASE_Y - h).saturating_sub(4),
            LABEL_SIZE,
            "normal",
            &pages.to_string(),
        );
        text(&mut body, x, BASE_Y + 16, LABEL_SIZE, "normal", label);
    }
    let _ = writeln!(
        body,
        r##"<line x1="{LEFT}" y1="{BASE_Y}" x2="{RIGHT}" y2="{BASE_Y}" stroke="#333"/>"##
    );
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

    #[test]
    fn a_report_without_a_move_draws_nothing() {
        assert_eq!(svg(&json!({"mode": "long"})), None);
        assert_eq!(svg(&json!({"migration": {"moved": false, "rounds": []}})), None);
    }

    #[test]
    fn each_round_is_a_bar_and_the_stop_and_copy_round_is_the_last() {
        let drawn = svg(&json!({"migration": {
            "moved": true, "seed": 7, "dirty_rate": 2, "guest_pages": 512, "total_pages": 600,
            "stop_copy_pages": 8, "downtime_us": 1500,
            "rounds": [{"round": 1, "pages": 512}, {"round": 2, "pages": 80}],
        }}))
        .unwrap();
        assert_eq!(drawn.matches("<rect x=").count(), 3, "{drawn}");
        assert!(drawn.contains(FILL[1]) && drawn.contains(">stop</text>"));
        assert!(drawn.contains("2 pre-copy rounds, 600 pages sent for 512, downtime 1.50 ms"));
    }

    #[test]
    fn any_values_draw_within_the_picture() {
        let drawn = svg(&json!({"migration": {
            "moved": true, "guest_pages": 0, "stop_copy_pages": u64::MAX,
            "rounds": (0..200).map(|i| json!({"round": i, "pages": u64::MAX - i})).collect::<Vec<_>>(),
        }}))
        .unwrap();
        for y in drawn.split(" y=\"").skip(1) {
            let y: u32 = y.split('"').next().unwrap().parse().unwrap();
            assert!(y <= HEIGHT, "y = {y}");
        }
    }
}
