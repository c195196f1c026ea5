//! The host-against-SVM table and the verdict.

use std::fmt::Write;

use super::cases::Cell;

/// One row: the check and what each side made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub host: Option<Cell>,
    pub svm: Option<Cell>,
}

impl Row {
    /// Passed on SVM. A row the guest never reported did not pass.
    pub fn svm_passed(&self) -> bool {
        self.svm.as_ref().is_some_and(|c| c.passed)
    }

    /// The two sides disagree on pass or fail.
    pub fn differs(&self) -> bool {
        self.host.as_ref().map(|c| c.passed) != self.svm.as_ref().map(|c| c.passed)
    }
}

/// Rows in the guest's order, then any the host alone reported.
pub fn merge(host: Vec<(String, Cell)>, svm: Vec<(String, Cell)>) -> Vec<Row> {
    let mut rows: Vec<Row> = svm
        .into_iter()
        .map(|(name, cell)| Row {
            name,
            host: None,
            svm: Some(cell),
        })
        .collect();
    for (name, cell) in host {
        match rows.iter_mut().find(|row| row.name == name) {
            Some(row) => row.host = Some(cell),
            None => rows.push(Row {
                name,
                host: Some(cell),
                svm: None,
            }),
        }
    }
    rows
}

const NO_RESULT: &str = "no result";

fn summary(cell: &Option<Cell>) -> &str {
    cell.as_ref().map_or(NO_RESULT, |c| c.summary.as_str())
}

/// The table, then what failed on SVM and how differing rows differ; with `verbose`, also
/// every row whose two messages are not the same.
pub fn render(rows: &[Row], host_title: &str, verbose: bool) -> String {
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5);
    let host_width = rows
        .iter()
        .map(|r| summary(&r.host).len())
        .max()
        .unwrap_or(0)
        .max(host_title.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<name_width$}  {:<host_width$}  SVM guest",
        "check", host_title
    );
    for row in rows {
        let mark = if !row.svm_passed() {
            "FAIL"
        } else if row.differs() {
            "diff"
        } else {
            "    "
        };
        let _ = writeln!(
            out,
            "{mark} {:<name_width$}  {:<host_width$}  {}",
            row.name,
            summary(&row.host),
            summary(&row.svm)
        );
    }
    let detail = |cell: &Option<Cell>| cell.as_ref().and_then(|c| c.detail.clone());
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.svm_passed()).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nWhat failed on SVM:");
        for row in failed {
            let why = detail(&row.svm).unwrap_or_else(|| summary(&row.svm).to_owned());
            let _ = writeln!(out, "  {}: {why}", row.name);
        }
    }
    let differing: Vec<&Row> = rows.iter().filter(|r| r.svm_passed() && r.differs()).collect();
    if !differing.is_empty() {
        let _ = writeln!(out, "\nPassed on SVM, not on the {host_title}:");
        for row in differing {
            let why = detail(&row.host).unwrap_or_else(|| summary(&row.host).to_owned());
            let _ = writeln!(out, "  {}: {why}", row.name);
        }
    }
    if verbose {
        let said: Vec<(&Row, String, String)> = rows
            .iter()
            .filter(|r| r.svm_passed() && !r.differs())
            .map(|r| {
                (
                    r,
                    detail(&r.host).unwrap_or_default(),
                    detail(&r.svm).unwrap_or_default(),
                )
            })
            .filter(|(_, host, svm)| host != svm)
            .collect();
        if !said.is_empty() {
            let _ = writeln!(out, "\nSame verdict, other words:");
            for (row, host, svm) in said {
                let _ = writeln!(out, "  {}\n    {host_title}: {host}\n    SVM guest: {svm}", row.name);
            }
        }
    }
    out
}

/// How many names the closing line lists before "and N more".
const NAMES_SHOWN: usize = 6;

/// `a, b, c` or `a, b, ... f, and 3 more`: the closing line stays readable.
fn names(names: &[&str]) -> String {
    if names.len() <= NAMES_SHOWN {
        return names.join(", ");
    }
    format!(
        "{}, and {} more",
        names[..NAMES_SHOWN].join(", "),
        names.len() - NAMES_SHOWN
    )
}

/// The closing line, and whether everything passed on SVM.
pub fn verdict(rows: &[Row], build: &str, host_title: &str) -> (bool, String) {
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.svm_passed())
        .map(|r| r.name.as_str())
        .collect();
    let differing: Vec<&str> = rows.iter().filter(|r| r.differs()).map(|r| r.name.as_str()).collect();
    let differ = match differing.len() {
        0 => format!("the {host_title} agrees on every row"),
        1 => format!("1 differs from the {host_title}: {}", differing[0]),
        n => format!("{n} differ from the {host_title}: {}", names(&differing)),
    };
    if failed.is_empty() && !rows.is_empty() {
        (
            true,
            format!(
                "svm-check: PASSED: all {} checks of the {build} passed on SVM; {differ}",
                rows.len()
            ),
        )
    } else {
        (
            false,
            format!(
                "svm-check: FAILED: {} of {} checks of the {build} did not pass on SVM: {}",
                failed.len(),
                rows.len(),
                names(&failed)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(passed: bool, summary: &str, detail: Option<&str>) -> Cell {
        Cell {
            passed,
            summary: summary.into(),
            detail: detail.map(Into::into),
        }
    }

    fn sample() -> Vec<Row> {
        let host = vec![
            ("kvm-hello --mode long".to_owned(), cell(true, "ok, 15 exits", None)),
            (
                "kvm-hello --mode paged32".to_owned(),
                cell(false, "status 4", Some("this host's KVM is PVM")),
            ),
            ("grader lab3_paged32_mode".to_owned(), cell(true, "passed", None)),
        ];
        let svm = vec![
            ("kvm-hello --mode long".to_owned(), cell(true, "ok, 15 exits", None)),
            ("kvm-hello --mode paged32".to_owned(), cell(true, "ok, 15 exits", None)),
        ];
        merge(host, svm)
    }

    #[test]
    fn rows_follow_the_guest_and_keep_what_only_the_host_saw() {
        let rows = sample();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kvm-hello --mode long",
                "kvm-hello --mode paged32",
                "grader lab3_paged32_mode"
            ]
        );
        assert!(rows[1].differs() && rows[1].svm_passed());
        assert!(!rows[2].svm_passed(), "no SVM result is not a pass");
    }

    #[test]
    fn the_table_marks_failures_and_differences_and_explains_them() {
        let text = render(&sample(), "PVM host", false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].trim_end(),
            "  check                     PVM host      SVM guest"
        );
        assert_eq!(lines[1], "     kvm-hello --mode long     ok, 15 exits  ok, 15 exits");
        assert_eq!(lines[2], "diff kvm-hello --mode paged32  status 4      ok, 15 exits");
        assert_eq!(lines[3], "FAIL grader lab3_paged32_mode  passed        no result");
        assert!(text.contains("What failed on SVM:\n  grader lab3_paged32_mode: no result\n"));
        assert!(
            text.contains("Passed on SVM, not on the PVM host:\n  kvm-hello --mode paged32: this host's KVM is PVM\n")
        );
    }

    #[test]
    fn verbose_shows_rows_whose_messages_differ() {
        let host = vec![(
            "corpus x".to_owned(),
            cell(true, "ok (status 4)", Some("triple fault at RIP 0x7")),
        )];
        let svm = vec![(
            "corpus x".to_owned(),
            cell(true, "ok (status 4)", Some("triple fault at RIP 0xfff0")),
        )];
        let rows = merge(host, svm);
        assert!(!render(&rows, "PVM host", false).contains("other words"));
        assert!(render(&rows, "PVM host", true).ends_with(
            "Same verdict, other words:\n  corpus x\n    PVM host: triple fault at RIP 0x7\n    SVM guest: triple fault at RIP 0xfff0\n"
        ));
    }

    #[test]
    fn the_verdict_passes_only_when_every_row_passed_on_svm() {
        let (ok, line) = verdict(&sample(), "reference build", "PVM host");
        assert!(!ok);
        assert_eq!(
            line,
            "svm-check: FAILED: 1 of 3 checks of the reference build did not pass on SVM: grader lab3_paged32_mode"
        );
        let rows = &sample()[..2];
        let (ok, line) = verdict(rows, "reference build", "PVM host");
        assert!(ok);
        assert_eq!(
            line,
            "svm-check: PASSED: all 2 checks of the reference build passed on SVM; 1 differs from the PVM host: kvm-hello --mode paged32"
        );
        assert!(!verdict(&[], "reference build", "PVM host").0, "nothing run is no pass");
        assert_eq!(
            names(&["a", "b", "c", "d", "e", "f", "g", "h"]),
            "a, b, c, d, e, f, and 2 more"
        );
        assert_eq!(names(&["a", "b"]), "a, b");
    }
}
