//! The probe's panic hook records the panics of lab code, and leaves every other panic (a
//! failing test's own message) to the hook that was there before.
#![cfg(feature = "solution")]

mod common;

use std::sync::Mutex;

use grader::runner::Outcome;
use grader_probe::Labs;
use lab2_paging::{GuestMemoryMmap, Lab2Error};

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn a_test_s_own_panic_still_reaches_the_harness_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or_default().to_owned();
        SEEN.lock().unwrap().push(message);
    }));
    fn seeded(_: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        panic!("a bug in lab code")
    }
    let mut labs = Labs::BUILT;
    labs.setup_long_mode_page_tables = seeded;
    let outcome = common::outcome_of("lab2_long_mode_cr3", labs, 1);
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.starts_with("lab code panicked: a bug in lab code")),
        "{outcome:?}"
    );
    let _ = std::panic::catch_unwind(|| panic!("a failing assertion of the test"));
    let _ = std::panic::take_hook();
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["a failing assertion of the test"],
        "the harness's hook saw {seen:?}"
    );
}
