//! `--explain`: the pictures of a live run, and the book's copies of them.
#![cfg(feature = "solution")]

mod common;

use std::path::{Path, PathBuf};

use common::{kvm_hello, require_kvm};
use predicates::prelude::*;

/// Replaces host virtual addresses (they change from run to run) with a placeholder.
fn without_host_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at]);
        let digits = rest[at + 2..].chars().take_while(char::is_ascii_hexdigit).count();
        if digits >= 9 {
            out.push_str("0xHOST");
        } else {
            out.push_str(&rest[at..at + 2 + digits]);
        }
        rest = &rest[at + 2 + digits..];
    }
    out.push_str(rest);
    out
}

fn book_img() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book/src/img")
}

const REGENERATE: &str = "regenerate with: cargo run -p kvm-hello --features solution -- --explain --svg book/src/img > book/src/img/explain-long.txt";

#[test]
fn the_book_shows_what_a_fresh_run_draws() {
    require_kvm();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explain-svg");
    let _ = std::fs::remove_dir_all(&dir);
    let out = kvm_hello()
        .args(["--explain", "--svg"])
        .arg(&dir)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let committed = std::fs::read_to_string(book_img().join("explain-long.txt")).unwrap();
    assert_eq!(
        without_host_addresses(&text),
        without_host_addresses(&committed),
        "book/src/img/explain-long.txt is stale; {REGENERATE}"
    );
    let names = [
        "guest-physical.svg",
        "vmm-virtual.svg",
        "page-walk.svg",
        "page-walk-4k.svg",
        "exit-timeline.svg",
        "kvm-run-round-trip.svg",
    ];
    for name in names {
        let fresh = std::fs::read_to_string(dir.join(name)).unwrap();
        let committed = std::fs::read_to_string(book_img().join(name)).unwrap();
        assert!(
            fresh.starts_with("<svg ") && fresh.trim_end().ends_with("</svg>"),
            "{name} is not an SVG"
        );
        assert_eq!(
            without_host_addresses(&fresh),
            without_host_addresses(&committed),
            "book/src/img/{name} is stale; {REGENERATE}"
        );
        assert_readable(name, &fresh);
    }
    // All from one run: every host address a picture shows is one the committed text shows.
    for name in names {
        let svg = std::fs::read_to_string(book_img().join(name)).unwrap();
        for address in host_addresses(&svg) {
            assert!(
                committed.contains(&address),
                "book/src/img/{name} shows {address}, from another run than explain-long.txt; {REGENERATE}"
            );
        }
    }
}

/// The host virtual addresses in a text: hex numbers of 12 digits or more (user-space mappings).
fn host_addresses(text: &str) -> Vec<String> {
    text.match_indices("0x")
        .map(|(at, _)| {
            let digits = text[at + 2..].chars().take_while(char::is_ascii_hexdigit).count();
            text[at..at + 2 + digits].to_owned()
        })
        .filter(|address| address.len() >= 14)
        .collect()
}

/// The book shows a picture at its natural size only up to the column's width; text must be
/// at least 12 px there.
fn assert_readable(name: &str, svg: &str) {
    let attr = |tag: &str, key: &str| -> Option<u32> {
        let at = tag.find(&format!("{key}=\""))? + key.len() + 2;
        tag[at..].split('"').next()?.parse().ok()
    };
    let width = attr(svg, "width").expect("the SVG has a width");
    assert!(
        width <= 740,
        "{name} is {width} px wide: the book would scale its text below 12 px"
    );
    for text in svg.split("<text ").skip(1) {
        let size = attr(text, "font-size").expect("every text has a font-size");
        assert!(
            size >= 12,
            "{name}: text of {size} px: {}",
            &text[..text.find('<').unwrap_or(text.len())]
        );
        let x = attr(text, "x").unwrap_or_default();
        let chars = text[text.find('>').unwrap_or(0) + 1..text.find("</text>").unwrap_or(text.len())]
            .chars()
            .count() as u32;
        // A monospace glyph is about 0.6 em wide.
        assert!(
            x + chars * size * 6 / 10 <= width,
            "{name}: a label runs off the picture at x = {x}"
        );
    }
}

#[test]
fn explain_shows_both_address_spaces_the_tables_the_walk_and_every_exit() {
    require_kvm();
    let out = kvm_hello()
        .args(["--explain", "--walk", "0x1234"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for needle in [
        "0x000000 - 0x000038  guest code and data",
        "0x002000 - 0x002fff  PML4 (CR3)",
        "guest memory, 2 MiB",
        "kvm_run of vCPU 0",
        "PD[0] at 0x4000 = 0x87 (P|RW|US|PS): maps the large page at 0x0",
        "0x1234 = PML4 index 0 | PDPT index 0 | PD index 0 | offset 0x1234 (21 bits)",
        "guest virtual 0x1234 -> guest physical 0x1234 -> host virtual 0x",
        "io out, port 0xe9, 1 byte(s) \"H\" at kvm_run + 0x",
        " 15  hlt",
    ] {
        assert!(text.contains(needle), "--explain does not show {needle:?}:\n{text}");
    }
}

#[test]
fn explain_shows_a_fault_and_modes_without_paging() {
    require_kvm();
    kvm_hello()
        .args(["--explain", "--walk", "0x200000"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("PD[1] at 0x4008 = 0x0 (-)")
                .and(predicate::str::contains("the PD entry is not present"))
                .and(predicate::str::contains("(the guest would take a page fault, #PF)")),
        );
    kvm_hello()
        .args(["--mode", "real", "--explain"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Page tables: none (real mode does not page)")
                .and(predicate::str::contains("the real-mode stack's top")),
        );
}

#[test]
fn host_addresses_are_the_only_thing_ignored() {
    assert_eq!(
        without_host_addresses("at 0x7f7689600400, PD 0x4000"),
        "at 0xHOST, PD 0x4000"
    );
}
