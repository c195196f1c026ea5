//! The grader's own page walker (the oracle the lab's walk is judged against), random page
//! tables to walk, and the cause of the first step where a walk departs from the oracle.

use lab2_paging::{ENTRY_ADDR_MASK, Level, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER, Walk, WalkFault, WalkStep};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::describe;
use crate::rng::Rng;

/// Bits 63..48 must copy bit 47.
pub fn is_canonical(gva: u64) -> bool {
    ((gva << 16) as i64 >> 16) as u64 == gva
}

/// The 4-level walk as the MMU does it (as far as the lab's `Walk` records it).
pub fn walk(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
    let mut walk = Walk {
        gva,
        steps: Vec::new(),
        result: Err(WalkFault::NonCanonical(gva)),
    };
    if !is_canonical(gva) {
        return walk;
    }
    let mut table = cr3 & ENTRY_ADDR_MASK;
    for level in Level::WALK {
        let index = (gva >> level.shift()) & 0x1ff;
        let entry_addr = table + index * 8;
        let Ok(entry) = memory.read_obj::<u64>(GuestAddress(entry_addr)) else {
            walk.result = Err(WalkFault::TableOutsideMemory {
                level,
                addr: entry_addr,
            });
            return walk;
        };
        walk.steps.push(WalkStep {
            level,
            index,
            entry_addr,
            entry,
        });
        if entry & PTE_PRESENT == 0 {
            walk.result = Err(WalkFault::NotPresent(level));
            return walk;
        }
        if level == Level::Pt || (entry & PTE_PS != 0 && matches!(level, Level::Pdpt | Level::Pd)) {
            let offset = (1u64 << level.shift()) - 1;
            walk.result = Ok((entry & ENTRY_ADDR_MASK & !offset) | (gva & offset));
            return walk;
        }
        table = entry & ENTRY_ADDR_MASK;
    }
    walk
}

/// Random page tables in guest memory, and the addresses worth walking through them.
#[derive(Debug)]
pub struct RandomTables {
    /// The PML4's address.
    pub cr3: u64,
    /// Addresses through every kind of entry: 1 GiB, 2 MiB and 4 KiB pages, a non-present entry
    /// at each level, non-canonical addresses, and a few at random.
    pub addresses: Vec<u64>,
    /// 4 KiB pages mapped inside guest memory, on pages no table uses: (virtual, physical).
    pub in_memory: Vec<(u64, u64)>,
}

/// Where the random tables go: pages of the 2 MiB guest memory above the kit's own tables.
const TABLE_AREA: (u64, u64) = (0x10_000, 0x1f_0000);

/// Flag bits a walk must ignore: RW, US, PWT, PCD, A, D (and G, the OS bits, NX on leaves).
fn noise(rng: &mut Rng, leaf: bool) -> u64 {
    let mut bits = PTE_RW | PTE_USER;
    for bit in [3u64, 4, 5, 6, 9, 10, 11] {
        if rng.chance(30) {
            bits |= 1 << bit;
        }
    }
    if leaf && rng.chance(30) {
        bits |= 1 << 8; // G
    }
    if rng.chance(40) {
        bits |= 1 << 63; // NX
    }
    if rng.chance(20) {
        bits |= 1 << rng.range(52, 59); // bits the OS may use
    }
    bits
}

/// A non-present entry: P clear, the other bits whatever an OS left there.
fn not_present(rng: &mut Rng) -> u64 {
    (rng.next_u64() & ENTRY_ADDR_MASK & !0xff) | (rng.range(0, 0x100) & !PTE_PRESENT)
}

fn sign_extend(gva: u64) -> u64 {
    ((gva << 16) as i64 >> 16) as u64
}

impl RandomTables {
    /// Builds tables in `memory`: a PML4 with two paths (one in the upper half), each PDPT with a
    /// 1 GiB page, a PD and a hole; each PD with a 2 MiB page, a PT and a hole; each PT with two
    /// 4 KiB pages and a hole.
    pub fn build(memory: &GuestMemoryMmap, rng: &mut Rng) -> RandomTables {
        let mut pages: Vec<u64> = (TABLE_AREA.0 / 0x1000..TABLE_AREA.1 / 0x1000)
            .map(|p| p * 0x1000)
            .collect();
        rng.shuffle(&mut pages);
        let mut next_page = pages.into_iter();
        let mut table = || next_page.next().expect("enough pages for the tables");
        let write = |addr: u64, value: u64| {
            memory
                .write_obj(value, GuestAddress(addr))
                .expect("inside guest memory")
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
        let mut addresses = Vec::new();
        let mut in_memory = Vec::new();
        let offset = |rng: &mut Rng, shift: u32| rng.range(0, 1 << shift);
        let pml4_indices = [distinct(rng, 1, 0)[0], distinct(rng, 1, 256)[0]];
        let pml4_hole = loop {
            let i = rng.range(0, 512);
            if !pml4_indices.contains(&i) {
                break i;
            }
        };
        write(cr3 + pml4_hole * 8, not_present(rng));
        addresses.push(sign_extend((pml4_hole << 39) | offset(rng, 39)));
        for i4 in pml4_indices {
            let pdpt = table();
            // The upper half's PML4 entry always has NX: a walk must drop it from the address.
            let nx = if i4 >= 256 { 1 << 63 } else { 0 };
            write(cr3 + i4 * 8, pdpt | PTE_PRESENT | nx | noise(rng, false));
            let base4 = i4 << 39;
            let [giant, to_pd, hole3] = distinct(rng, 3, 0)[..] else {
                unreachable!()
            };
            let giant_page = rng.range(0, 1 << 10) << 30;
            write(pdpt + giant * 8, giant_page | PTE_PRESENT | PTE_PS | noise(rng, true));
            addresses.push(sign_extend(base4 | (giant << 30) | offset(rng, 30)));
            write(pdpt + hole3 * 8, not_present(rng));
            addresses.push(sign_extend(base4 | (hole3 << 30) | offset(rng, 30)));
            let pd = table();
            write(pdpt + to_pd * 8, pd | PTE_PRESENT | noise(rng, false));
            let base3 = base4 | (to_pd << 30);
            let [large, to_pt, hole2] = distinct(rng, 3, 0)[..] else {
                unreachable!()
            };
            let large_page = rng.range(0, 1 << 19) << 21;
            write(pd + large * 8, large_page | PTE_PRESENT | PTE_PS | noise(rng, true));
            addresses.push(sign_extend(base3 | (large << 21) | offset(rng, 21)));
            write(pd + hole2 * 8, not_present(rng));
            addresses.push(sign_extend(base3 | (hole2 << 21) | offset(rng, 21)));
            let pt = table();
            write(pd + to_pt * 8, pt | PTE_PRESENT | noise(rng, false));
            let base2 = base3 | (to_pt << 21);
            for (i, index) in distinct(rng, 3, 0).into_iter().enumerate() {
                if i == 2 {
                    write(pt + index * 8, not_present(rng));
                } else if i == 0 {
                    // A page of guest memory, mapped far from its physical address.
                    let page = table();
                    write(pt + index * 8, page | PTE_PRESENT | noise(rng, true));
                    in_memory.push((sign_extend(base2 | (index << 12)), page));
                } else {
                    // Bit 7 of a PT entry is PAT, not PS: set it at times.
                    let pat = if rng.chance(50) { PTE_PS } else { 0 };
                    let page = rng.range(0, 1 << 28) << 12;
                    write(pt + index * 8, page | PTE_PRESENT | pat | noise(rng, true));
                }
                addresses.push(sign_extend(base2 | (index << 12) | offset(rng, 12)));
            }
        }
        for _ in 0..2 {
            // Not canonical: bits 63..48 differ from bit 47.
            let low = rng.range(0, 1 << 48);
            let high = rng.range(1, 0xffff) << 48;
            let gva = low | high;
            if !is_canonical(gva) {
                addresses.push(gva);
            }
        }
        for _ in 0..4 {
            addresses.push(sign_extend(rng.range(0, 1 << 48)));
        }
        for &(gva, _) in &in_memory {
            addresses.push(gva | rng.range(0, 0x1000));
        }
        rng.shuffle(&mut addresses);
        RandomTables {
            cr3,
            addresses,
            in_memory,
        }
    }
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
    if shift > 12 && *got == (last.entry & ENTRY_ADDR_MASK) | (gva & 0xfff) {
        return format!(
            "the walk gave {got:#x}, expected {want:#x}: {}[{}] maps a {} page, so the offset is the address's low {shift} bits, not 12",
            last.level,
            last.index,
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
