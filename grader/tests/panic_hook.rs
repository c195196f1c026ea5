//! The grader's panic hook records the panics of checks and lab code, and leaves every other
//! panic (a failing test's own message) to the hook that was there before.
#![cfg(feature = "solution")]

use std::sync::Mutex;

use grader::runner::run_check_here;
use grader::{Ctx, Labs, find_check};
use lab3_registers::Mode;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn a_test_s_own_panic_still_reaches_the_harness_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or_default().to_owned();
        SEEN.lock().unwrap().push(message);
    }));
    fn seeded(_: Mode, _: usize) -> kvm_bindings::kvm_regs {
        panic!("a bug in lab code")
    }
    let mut labs = Labs::BUILT;
    labs.general_registers = seeded;
    let ctx = Ctx {
        labs,
        vmm: (env!("CARGO_BIN_EXE_grader").into(), vec!["vmm".into()]),
        seed: 1,
    };
    let outcome = run_check_here(&find_check("lab3_general_registers").unwrap(), &ctx);
    assert_eq!(outcome["outcome"], "failed");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .starts_with("lab code panicked: a bug in lab code")
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
