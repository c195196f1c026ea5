//! Page tables to walk, built with the walks the MMU makes through them, and the cause of the
//! first step where a lab's walk departs from the recorded one.
//!
//! The judge never walks tables: each address it hands the lab is composed from the entries it
//! chose on the way down (an index per level, then an offset), and its walk is recorded as the
//! tables are written. So the grader holds the answers without a second `translate`.

use grader_protocol::lab2::{Level, Walk, WalkFault, WalkStep};

use crate::describe;
use crate::facts::{ENTRY_ADDR_MASK, PD_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER};
use crate::rng::Rng;

/// Bits 63..48 must copy bit 47.
pub fn is_canonical(gva: u64) -> bool {
    ((gva << 16) as i64 >> 16) as u64 == gva
}

/// Random page tables, as the words to write into guest memory, and the addresses worth walking
/// through them with their walks.
#[derive(Debug)]
pub struct RandomTables {
    /// The PML4's address.
    pub cr3: u64,
    /// The tables: (guest physical address, entry).
    pub memory: Vec<(u64, u64)>,
    /// Walks through every kind of entry: 1 GiB, 2 MiB and 4 KiB pages, a non-present entry at
    /// each level, an empty PML4 slot, non-canonical addresses; in random order.
    ///
    /// Every present entry has bits a walk must not take for address bits: the ignored bits
    /// (9..11 at random, all three on the leaves of one path; 52..62) and NX, at least one of
    /// 52..63 always; the 1 GiB and 2 MiB pages have PAT (bit 12) set, and each is walked once
    /// with bit 12 of the offset clear. The bits a large page's entry reserves (13..20, 13..29)
    /// stay clear: the MMU faults on them, and the lab's walk has no such fault.
    pub walks: Vec<Walk>,
    /// 4 KiB pages mapped inside guest memory, on pages no table uses: (virtual, physical).
    pub in_memory: Vec<(u64, u64)>,
    /// The 1 GiB page (a PDPT entry) and the 2 MiB page (a PD entry) that map guest physical 0
    /// (one path has each, so their first 2 MiB lie in guest memory): the level of the entry, and
    /// the page's first address.
    pub large_at_zero: Vec<(Level, u64)>,
}

/// Where the random tables go: pages of the 2 MiB guest memory above the kit's own tables.
const TABLE_AREA: (u64, u64) = (0x10_000, 0x1f_0000);

/// Bits 52..=63 of an entry: ignored by the MMU (52..62; 59..62 are protection keys only with
/// CR4.PKE) and NX (63). None of them is an address bit.
const HIGH_BITS: u64 = 0xfff0_0000_0000_0000;
/// Bit 12 of a 1 GiB or 2 MiB page entry: PAT, a caching attribute, not an address bit.
pub const PTE_PAT_LARGE: u64 = 1 << 12;

/// Bits a walk must ignore in a present entry: RW, US, PWT, PCD, A, D, the ignored bits 9..11 and
/// 52..62, NX (63), and G on a leaf. Every entry has at least one bit of 52..63 set, so a walk
/// that takes its address from anything wider than bits 12..51 goes wrong on every table.
pub fn noise(rng: &mut Rng, leaf: bool) -> u64 {
    let mut bits = PTE_RW | PTE_USER;
    for bit in [3u64, 4, 5, 6, 9, 10, 11] {
        if rng.chance(40) {
            bits |= 1 << bit;
        }
    }
    if leaf && rng.chance(30) {
        bits |= 1 << 8; // G
    }
    bits | (rng.next_u64() & HIGH_BITS) | 1 << rng.range(52, 64)
}

/// The ignored bits 9..11, all set: on the leaves of one path, so that a walk that masks only
/// bits 0..8 off keeps them in every address of that page.
const IGNORED_LOW: u64 = 0xe00;

/// A non-present entry: P clear, the other bits whatever an OS left there.
fn not_present(rng: &mut Rng) -> u64 {
    (rng.next_u64() & ENTRY_ADDR_MASK & !0xff) | (rng.range(0, 0x100) & !PTE_PRESENT)
}

fn sign_extend(gva: u64) -> u64 {
    ((gva << 16) as i64 >> 16) as u64
}

/// A walk that ends in a page: the steps, then the page's base and the size of its offset.
fn to_page(steps: &[WalkStep], gva: u64, page: u64, shift: u32) -> Walk {
    Walk {
        gva,
        steps: steps.to_vec(),
        result: Ok(page | (gva & ((1 << shift) - 1))),
    }
}

/// A walk that ends at a non-present entry, the last of `steps`.
fn to_hole(steps: &[WalkStep], gva: u64) -> Walk {
    let level = steps.last().expect("a hole is an entry").level;
    Walk {
        gva,
        steps: steps.to_vec(),
        result: Err(WalkFault::NotPresent(level)),
    }
}

/// The walk of a non-canonical address: no entry is read.
fn refused(gva: u64) -> Walk {
    let fault = WalkFault::NonCanonical(gva);
    Walk {
        gva,
        steps: Vec::new(),
        result: Err(fault),
    }
}

/// The entry at `table[index]`, as a walk reads it.
fn step(level: Level, table: u64, index: u64, entry: u64) -> WalkStep {
    WalkStep {
        level,
        index,
        entry_addr: table + index * 8,
        entry,
    }
}

impl RandomTables {
    /// Builds tables: a PML4 with two paths (one in the upper half), each PDPT with a 1 GiB page,
    /// a PD and a hole; each PD with a 2 MiB page, a PT and a hole; each PT with two 4 KiB pages
    /// (bit 7, PAT there, set at times) and a hole.
    pub fn build(rng: &mut Rng) -> RandomTables {
        let mut pages: Vec<u64> = (TABLE_AREA.0 / 0x1000..TABLE_AREA.1 / 0x1000)
            .map(|p| p * 0x1000)
            .collect();
        rng.shuffle(&mut pages);
        let mut next_page = pages.into_iter();
        let mut table = || next_page.next().expect("enough pages for the tables");
        let mut memory = Vec::new();
        let mut walks = Vec::new();
        let mut write = |level: Level, table: u64, index: u64, entry: u64| {
            memory.push((table + index * 8, entry));
            step(level, table, index, entry)
        };
        let distinct = |rng: &mut Rng, n: usize, low: u64| -> Vec<u64> {
            let mut picked: Vec<u64> = Vec::new();
            while picked.len() < n {
                let i = rng.range(low, 512);
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            picked
        };
        let cr3 = table();
        let mut in_memory = Vec::new();
        let offset = |rng: &mut Rng, shift: u32| rng.range(0, 1 << shift);
        let lower = distinct(rng, 1, 0)[0];
        // Another index than the first path's (which may be in the upper half too).
        let upper = loop {
            let i = rng.range(256, 512);
            if i != lower {
                break i;
            }
        };
        let pml4_indices = [lower, upper];
        let mut unused_pml4 = || loop {
            let i = rng.range(0, 512);
            if !pml4_indices.contains(&i) {
                break i;
            }
        };
        let (pml4_hole, empty) = (unused_pml4(), unused_pml4());
        let hole = write(Level::Pml4, cr3, pml4_hole, not_present(rng));
        walks.push(to_hole(&[hole], sign_extend((pml4_hole << 39) | offset(rng, 39))));
        if empty != pml4_hole {
            // A slot nobody wrote: 0, not present.
            let gva = sign_extend((empty << 39) | offset(rng, 39));
            walks.push(to_hole(&[step(Level::Pml4, cr3, empty, 0)], gva));
        }
        // The path whose leaves have all of bits 9..11 set (the other's have them at random).
        let all_ignored = rng.range(0, 2) as usize;
        // The paths whose 1 GiB page and whose 2 MiB page map guest physical 0.
        let (giant_at_zero, large_at_zero) = (rng.range(0, 2) as usize, rng.range(0, 2) as usize);
        let mut at_zero = Vec::new();
        for (path, i4) in pml4_indices.into_iter().enumerate() {
            let ignored_low = if path == all_ignored { IGNORED_LOW } else { 0 };
            let pdpt = table();
            // The upper half's PML4 entry always has NX: a walk must drop it from the address.
            let nx = if i4 >= 256 { 1 << 63 } else { 0 };
            let s4 = write(Level::Pml4, cr3, i4, pdpt | PTE_PRESENT | nx | noise(rng, false));
            let base4 = i4 << 39;
            let [giant, to_pd, hole3] = distinct(rng, 3, 0)[..] else {
                unreachable!()
            };
            let giant_page = if path == giant_at_zero {
                0
            } else {
                rng.range(1, 1 << 10) << 30
            };
            // PAT (bit 12) always: a 1 GiB page's address starts at bit 30.
            let s3 = write(
                Level::Pdpt,
                pdpt,
                giant,
                giant_page | PTE_PRESENT | PTE_PS | PTE_PAT_LARGE | noise(rng, true) | ignored_low,
            );
            let base = base4 | (giant << 30);
            walks.push(to_page(&[s4, s3], sign_extend(base | offset(rng, 30)), giant_page, 30));
            // And an offset in the first 2 MiB with bit 12 clear: PAT kept in the address shows
            // there, also as a host address when the page is at guest physical 0.
            let gva = sign_extend(base | (offset(rng, 21) & !PTE_PAT_LARGE));
            walks.push(to_page(&[s4, s3], gva, giant_page, 30));
            if giant_page == 0 {
                at_zero.push((Level::Pdpt, sign_extend(base)));
            }
            let s3 = write(Level::Pdpt, pdpt, hole3, not_present(rng));
            walks.push(to_hole(&[s4, s3], sign_extend(base4 | (hole3 << 30) | offset(rng, 30))));
            let pd = table();
            let s3 = write(Level::Pdpt, pdpt, to_pd, pd | PTE_PRESENT | noise(rng, false));
            let base3 = base4 | (to_pd << 30);
            let [large, to_pt, hole2] = distinct(rng, 3, 0)[..] else {
                unreachable!()
            };
            let large_page = if path == large_at_zero {
                0
            } else {
                rng.range(1, 1 << 19) << 21
            };
            // PAT (bit 12) always: a 2 MiB page's address starts at bit 21.
            let s2 = write(
                Level::Pd,
                pd,
                large,
                large_page | PTE_PRESENT | PTE_PS | PTE_PAT_LARGE | noise(rng, true) | ignored_low,
            );
            let base = base3 | (large << 21);
            walks.push(to_page(
                &[s4, s3, s2],
                sign_extend(base | offset(rng, 21)),
                large_page,
                21,
            ));
            let gva = sign_extend(base | (offset(rng, 21) & !PTE_PAT_LARGE));
            walks.push(to_page(&[s4, s3, s2], gva, large_page, 21));
            if large_page == 0 {
                at_zero.push((Level::Pd, sign_extend(base)));
            }
            let s2 = write(Level::Pd, pd, hole2, not_present(rng));
            walks.push(to_hole(
                &[s4, s3, s2],
                sign_extend(base3 | (hole2 << 21) | offset(rng, 21)),
            ));
            let pt = table();
            let s2 = write(Level::Pd, pd, to_pt, pt | PTE_PRESENT | noise(rng, false));
            let base2 = base3 | (to_pt << 21);
            for (i, index) in distinct(rng, 3, 0).into_iter().enumerate() {
                let gva = sign_extend(base2 | (index << 12) | offset(rng, 12));
                if i == 2 {
                    let s1 = write(Level::Pt, pt, index, not_present(rng));
                    walks.push(to_hole(&[s4, s3, s2, s1], gva));
                    continue;
                }
                let page = if i == 0 {
                    // A page of guest memory, mapped far from its physical address.
                    table()
                } else {
                    rng.range(0, 1 << 28) << 12
                };
                // Bit 7 of a PT entry is PAT, not PS: set it at times.
                let pat = if i == 1 && rng.chance(50) { PTE_PS } else { 0 };
                let s1 = write(
                    Level::Pt,
                    pt,
                    index,
                    page | PTE_PRESENT | pat | noise(rng, true) | ignored_low,
                );
                let steps = [s4, s3, s2, s1];
                walks.push(to_page(&steps, gva, page, 12));
                if i == 0 {
                    let page_gva = sign_extend(base2 | (index << 12));
                    in_memory.push((page_gva, page));
                    walks.push(to_page(&steps, page_gva | rng.range(0, 0x1000), page, 12));
                }
            }
        }
        for _ in 0..2 {
            // Not canonical: bits 63..48 differ from bit 47.
            let gva = rng.range(0, 1 << 48) | rng.range(1, 0xffff) << 48;
            if !is_canonical(gva) {
                walks.push(refused(gva));
            }
        }
        rng.shuffle(&mut walks);
        RandomTables {
            cr3,
            memory,
            walks,
            in_memory,
            large_at_zero: at_zero,
        }
    }
}

/// The flags of every entry of the identity map: present, writable, user.
pub const IDENTITY_FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_USER;

/// kvm-hello-world's identity map (PML4[0] -> PDPT[0] -> PD[0], one 2 MiB page at 0), as words.
pub fn identity_map() -> Vec<(u64, u64)> {
    vec![
        (PML4_ADDR, PDPT_ADDR | IDENTITY_FLAGS),
        (PDPT_ADDR, PD_ADDR | IDENTITY_FLAGS),
        (PD_ADDR, IDENTITY_FLAGS | PTE_PS),
    ]
}

/// Addresses through the identity map with their walks: in the 2 MiB page, past it, past the
/// first GiB, in the (empty) upper half, and not canonical.
pub fn identity_walks(rng: &mut Rng, in_page: usize, outside: bool) -> Vec<Walk> {
    let s4 = step(Level::Pml4, PML4_ADDR, 0, PDPT_ADDR | IDENTITY_FLAGS);
    let s3 = step(Level::Pdpt, PDPT_ADDR, 0, PD_ADDR | IDENTITY_FLAGS);
    let s2 = step(Level::Pd, PD_ADDR, 0, IDENTITY_FLAGS | PTE_PS);
    let mut walks: Vec<Walk> = [0x400, 0x1f_ffff]
        .into_iter()
        .chain((0..in_page).map(|_| rng.range(0, 0x20_0000)))
        .map(|gva| to_page(&[s4, s3, s2], gva, 0, 21))
        .collect();
    if outside {
        let pd = rng.range(1, 512);
        let gva = pd << 21 | rng.range(0, 1 << 21);
        walks.push(to_hole(&[s4, s3, step(Level::Pd, PD_ADDR, pd, 0)], gva));
        let pdpt = rng.range(1, 512);
        let gva = pdpt << 30 | rng.range(0, 1 << 30);
        walks.push(to_hole(&[s4, step(Level::Pdpt, PDPT_ADDR, pdpt, 0)], gva));
        let pml4 = rng.range(256, 512);
        let gva = sign_extend(pml4 << 39 | rng.range(0, 1 << 39));
        walks.push(to_hole(&[step(Level::Pml4, PML4_ADDR, pml4, 0)], gva));
        for gva in [
            0x0000_8000_0000_0000 | rng.range(0, 1 << 47),
            rng.range(1, 0xffff) << 48 | rng.range(0, 1 << 47),
        ] {
            if !is_canonical(gva) {
                walks.push(refused(gva));
            }
        }
    }
    rng.shuffle(&mut walks);
    walks
}

fn step_text(s: &WalkStep) -> String {
    format!(
        "{}[{}] at {:#x} = {}",
        s.level.name(),
        s.index,
        s.entry_addr,
        describe::entry(s.entry)
    )
}

/// A walk in one line: its steps and its result.
pub fn walk_text(walk: &Walk) -> String {
    let steps: Vec<String> = walk.steps.iter().map(step_text).collect();
    let result = match &walk.result {
        Ok(gpa) => format!("physical {gpa:#x}"),
        Err(fault) => format!("fault \"{fault}\""),
    };
    format!("[{}] -> {result}", steps.join(", "))
}

fn page_size(level: Level) -> &'static str {
    match level {
        Level::Pdpt => "1 GiB",
        Level::Pd => "2 MiB",
        _ => "4 KiB",
    }
}

/// Why `found` departs from the oracle's `expected` walk of `gva` at its first difference;
/// `None` when they agree.
pub fn diagnose(cr3: u64, gva: u64, expected: &Walk, found: &Walk) -> Option<String> {
    if expected.steps == found.steps && expected.result == found.result {
        return None;
    }
    let (e, f) = (&expected.steps, &found.steps);
    let first = e
        .iter()
        .zip(f)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(f.len()));
    let cause = if e.is_empty() && matches!(expected.result, Err(WalkFault::NonCanonical(_))) {
        format!(
            "{gva:#x} is not canonical (bits 63..48 must all copy bit 47), yet the walk {}: check that the address is canonical before reading any table, and fail with WalkFault::NonCanonical",
            if f.is_empty() {
                format!("gave {}", walk_text(found))
            } else {
                format!("read {}", step_text(&f[0]))
            }
        )
    } else if f.is_empty() && matches!(found.result, Err(WalkFault::NonCanonical(_))) {
        format!(
            "{gva:#x} is canonical (bits 63..48 all copy bit 47), but the walk refused it as non-canonical: an address in the upper half has bits 63..47 all set"
        )
    } else if first < e.len() && first < f.len() {
        differing_step(cr3, gva, e, &f[first], first)
    } else if f.len() < e.len() {
        stopped_early(&e[first], f.last(), &found.result)
    } else if f.len() > e.len() {
        went_on(e.last(), &f[first])
    } else {
        wrong_result(gva, e.last(), &expected.result, &found.result)
    };
    Some(format!(
        "the walk of {gva:#x}: {cause} (expected {}, found {})",
        walk_text(expected),
        walk_text(found)
    ))
}

fn differing_step(cr3: u64, gva: u64, e: &[WalkStep], f: &WalkStep, k: usize) -> String {
    let want = &e[k];
    if f.level != want.level {
        return format!("step {} is at the {}, expected the {}", k + 1, f.level, want.level);
    }
    if f.index != want.index {
        let shift = want.level.shift();
        let other = Level::WALK
            .iter()
            .find(|l| (gva >> l.shift()) & 0x1ff == f.index && **l != want.level);
        let hint = other.map_or(String::new(), |l| format!(" (that is the {}'s index)", l.name()));
        return format!(
            "the {} index is {}{hint}, expected {}: it is the 9 bits of the address from bit {shift} (bits {}..{shift})",
            want.level,
            f.index,
            want.index,
            shift + 8
        );
    }
    if f.entry_addr != want.entry_addr {
        let (table, holder) = if k == 0 {
            (cr3 & ENTRY_ADDR_MASK, "CR3".to_owned())
        } else {
            (
                e[k - 1].entry & ENTRY_ADDR_MASK,
                format!("the {} entry {}", e[k - 1].level, describe::entry(e[k - 1].entry)),
            )
        };
        if f.entry_addr == table + want.index {
            return format!(
                "{}[{}] was read at {:#x}, expected {:#x}: the entry address is not scaled by 8 (entries are 8 bytes: entry i is at table + i * 8)",
                want.level, want.index, f.entry_addr, want.entry_addr
            );
        }
        if k > 0 && (f.entry_addr & !ENTRY_ADDR_MASK & !0xff8 != 0 || f.entry_addr & 0xfff != want.entry_addr & 0xfff) {
            return format!(
                "{}[{}] was read at {:#x}, expected {:#x}: flag bits were left in the table's address; {holder} holds the next table's address in bits 12..51 only (mask with {ENTRY_ADDR_MASK:#x})",
                want.level, want.index, f.entry_addr, want.entry_addr
            );
        }
        return format!(
            "{}[{}] was read at {:#x}, expected {:#x}: the table is at the address in {holder} (bits 12..51), and entry i is at table + i * 8",
            want.level, want.index, f.entry_addr, want.entry_addr
        );
    }
    format!(
        "the walk recorded {}[{}] = {}, but memory at {:#x} holds {}: record the entry as read, all 64 bits",
        want.level,
        want.index,
        describe::entry(f.entry),
        want.entry_addr,
        describe::entry(want.entry)
    )
}

fn stopped_early(next: &WalkStep, last: Option<&WalkStep>, result: &Result<u64, WalkFault>) -> String {
    if let (Some(last), Err(WalkFault::TableOutsideMemory { addr, .. })) = (last, result)
        && *addr != next.entry_addr
        && *addr & !ENTRY_ADDR_MASK & !0xff8 != 0
    {
        return format!(
            "the walk looked for {}[{}] at {addr:#x}, expected {:#x}: flag bits were left in the table's address; {}[{}] = {} holds the next table's address in bits 12..51 only (NX is bit 63; mask with {ENTRY_ADDR_MASK:#x})",
            next.level,
            next.index,
            next.entry_addr,
            last.level,
            last.index,
            describe::entry(last.entry)
        );
    }
    if next.entry & PTE_PRESENT == 0 {
        return format!(
            "the walk stopped before recording the non-present {}[{}] = {}: record the entry it reads, then fault with WalkFault::NotPresent({})",
            next.level,
            next.index,
            describe::entry(next.entry),
            next.level
        );
    }
    let Some(last) = last else {
        return "the walk recorded no step: record every entry it reads (level, index, entry address, entry)".into();
    };
    if last.entry & PTE_PS != 0 && last.level == Level::Pt {
        return format!(
            "the walk stopped at {}[{}] = {} as if it mapped a page of its own: bit 7 of a PT entry is PAT, not PS (a PT entry always maps a 4 KiB page)",
            last.level,
            last.index,
            describe::entry(last.entry)
        );
    }
    if last.entry & PTE_PRESENT != 0 && last.entry & PTE_PS == 0 {
        return format!(
            "the walk stopped at {}[{}] = {}, which is present without PS: it points to the next table ({:#x}), which the walk must read ({result:?})",
            last.level,
            last.index,
            describe::entry(last.entry),
            last.entry & ENTRY_ADDR_MASK
        );
    }
    format!(
        "the walk stopped after {}[{}], expected it to go on to {}[{}]",
        last.level, last.index, next.level, next.index
    )
}

fn went_on(last: Option<&WalkStep>, extra: &WalkStep) -> String {
    let Some(last) = last else {
        return format!("the walk read {} where it should have stopped", step_text(extra));
    };
    if last.entry & PTE_PRESENT == 0 {
        return format!(
            "{}[{}] = {} is not present (P, bit 0, is clear), yet the walk went on to read {}: stop there with WalkFault::NotPresent({}); a non-present entry's other bits mean nothing",
            last.level,
            last.index,
            describe::entry(last.entry),
            step_text(extra),
            last.level
        );
    }
    if last.entry & PTE_PS != 0 {
        return format!(
            "{}[{}] = {} has PS: it maps a {} page and the walk ends there, yet it went on to read {}{}",
            last.level,
            last.index,
            describe::entry(last.entry),
            page_size(last.level),
            step_text(extra),
            if last.level == Level::Pdpt {
                " (PS counts in the PDPT too: 1 GiB pages)"
            } else {
                ""
            }
        );
    }
    format!(
        "the walk went on after {} to read {}",
        step_text(last),
        step_text(extra)
    )
}

fn wrong_result(
    gva: u64,
    last: Option<&WalkStep>,
    expected: &Result<u64, WalkFault>,
    found: &Result<u64, WalkFault>,
) -> String {
    let show = |r: &Result<u64, WalkFault>| match r {
        Ok(gpa) => format!("physical {gpa:#x}"),
        Err(fault) => format!("fault \"{fault}\""),
    };
    let (Some(last), Ok(want), Ok(got)) = (last, expected, found) else {
        return format!(
            "every entry was read right, but the walk gave {}, expected {}: a clear P faults at its level; a PT entry or a PS entry maps a page",
            show(found),
            show(expected)
        );
    };
    let shift = last.level.shift();
    let offset = (1u64 << shift) - 1;
    let pat_kept =
        shift > 12 && got ^ want == PTE_PAT_LARGE && got & PTE_PAT_LARGE != 0 && last.entry & PTE_PAT_LARGE != 0;
    let offset_of_12_bits = shift > 12 && *got == (last.entry & ENTRY_ADDR_MASK) | (gva & 0xfff);
    if pat_kept && offset_of_12_bits {
        // The address's bits 12 up to the page's offset are 0: both mistakes give this address.
        return format!(
            "the walk gave {got:#x}, expected {want:#x}: two mistakes give this address, whose bits 12..{} are 0: {}[{}] maps a {} page, so the offset is the address's low {shift} bits, not 12; or the PAT bit (bit 12) of {}[{}] = {} was kept in the physical address (in a {} page entry bit 12 is PAT, a caching attribute, and the page's address starts at bit {shift})",
            shift - 1,
            last.level,
            last.index,
            page_size(last.level),
            last.level,
            last.index,
            describe::entry(last.entry),
            page_size(last.level)
        );
    }
    if offset_of_12_bits {
        return format!(
            "the walk gave {got:#x}, expected {want:#x}: {}[{}] maps a {} page, so the offset is the address's low {shift} bits, not 12",
            last.level,
            last.index,
            page_size(last.level)
        );
    }
    if pat_kept {
        return format!(
            "the walk gave {got:#x}, expected {want:#x}: the PAT bit (bit 12) of {}[{}] = {} was kept in the physical address; in a {} page entry bit 12 is PAT, a caching attribute, and the page's address starts at bit {shift}: clear the bits below bit {shift} of the entry's address, then add the address's low {shift} bits",
            last.level,
            last.index,
            describe::entry(last.entry),
            page_size(last.level)
        );
    }
    if got & !ENTRY_ADDR_MASK & !offset != 0 || (got ^ want) & 0xfff & !(gva & 0xfff) != 0 {
        return format!(
            "the walk gave {got:#x}, expected {want:#x}: flag bits of {}[{}] = {} were left in the page's address (bits 12..51 only, mask with {ENTRY_ADDR_MASK:#x})",
            last.level,
            last.index,
            describe::entry(last.entry)
        );
    }
    format!(
        "the walk gave {got:#x}, expected {want:#x}: a {} page's physical address is the entry's bits {shift}..51 plus the address's low {shift} bits",
        page_size(last.level)
    )
}
