//! The system tests of the course tools: each builds copies of the kit (minutes on 2 cores), so
//! the README's test command lists them as ignored ("slow: cargo xtask ci runs it") and
//! `cargo xtask ci` runs them (`cargo test --workspace --features solution -- --ignored`).
//!
//! The tests that grade a student copy share one: exported and built by the first that needs it
//! (in its own target directory, never shared with another copy of the workspace), then lent to
//! one test at a time with its lab files untouched.
#![cfg(feature = "instructor")]

#[path = "../common/mod.rs"]
mod common;

mod class;
mod gradescope;
mod round_trip;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::*;

/// The shared student copy, once exported.
static STUDENT_COPY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The shared student copy, for one test until it is dropped.
#[derive(Debug)]
pub struct SharedCopy(MutexGuard<'static, Option<PathBuf>>);

impl SharedCopy {
    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("exported")
    }
}

/// The shared student copy, with every lab file untouched (whatever the last test, passed or
/// failed, left in it); its build output is kept.
pub fn student_copy() -> SharedCopy {
    let mut copy = STUDENT_COPY.lock().unwrap_or_else(PoisonError::into_inner);
    let kit = copy
        .get_or_insert_with(|| export(&scratch("student-copy").join("kit")))
        .clone();
    for lab in LABS {
        let file = kit.join(format!("labs/{lab}/src/lib.rs"));
        let untouched = read(&kit.join(format!("xtask/stubs/{lab}.rs")));
        // An unchanged file keeps its time stamp, so cargo does not rebuild its lab.
        if std::fs::read_to_string(&file).ok().as_ref() != Some(&untouched) {
            std::fs::write(&file, untouched).unwrap();
        }
    }
    SharedCopy(copy)
}
