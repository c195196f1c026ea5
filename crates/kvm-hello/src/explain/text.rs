//! `--explain`'s pictures as text.

use std::fmt::Write as _;

use kit_common::{GUEST_MEMORY_SIZE, Mode, RESERVED_START};
use lab2_paging::{ENTRY_ADDR_MASK, PTE_PS, entry_flags};

use super::model::*;

fn exit_label(event: &ExitEvent) -> String {
    match (event.kind.as_str(), event.port) {
        ("io out", Some(port)) => format!(
            "io out, port {port:#x}, {} byte(s) {:?} at kvm_run + {:#x}",
            event.data.len(),
            String::from_utf8_lossy(&event.data),
            event.data_offset.unwrap_or_default()
        ),
        (kind, Some(port)) => format!("{kind} {port:#x}"),
        (kind, None) => kind.to_owned(),
    }
}

fn walk_lines(e: &Explanation, out: &mut String) {
    let Some(walk) = &e.walk else {
        let note = match e.mode {
            Mode::Real | Mode::Protected => "no paging in this mode: the guest physical address is the linear address",
            _ => "lab 2's walker follows the long-mode tables only",
        };
        let _ = writeln!(out, "  {note}");
        return;
    };
    let gva = walk.gva;
    let mut parts: Vec<String> = walk_fields(walk)
        .iter()
        .map(|(name, shift)| format!("{name} index {}", (gva >> shift) & 0x1ff))
        .collect();
    let offset_bits = offset_bits(walk);
    parts.push(format!(
        "offset {:#x} ({offset_bits} bits)",
        gva & ((1 << offset_bits) - 1)
    ));
    let _ = writeln!(out, "  {gva:#x} = {}", parts.join(" | "));
    for step in &walk.steps {
        let _ = writeln!(
            out,
            "  {}[{}] at {:#x} = {:#x} ({})",
            step.level.name(),
            step.index,
            step.entry_addr,
            step.entry,
            entry_flags(step.entry)
        );
    }
    match walk.result {
        Ok(gpa) => {
            let _ = writeln!(
                out,
                "  guest virtual {gva:#x} -> guest physical {gpa:#x} -> {}",
                host_of(e.host_base, gpa)
            );
        }
        Err(fault) => {
            let exception = match fault {
                lab2_paging::WalkFault::NonCanonical(_) => "a general-protection fault, #GP",
                _ => "a page fault, #PF",
            };
            let _ = writeln!(out, "  no translation: {fault} (the guest would take {exception})");
        }
    }
}

/// The text pictures.
pub fn text(e: &Explanation, output: &[u8]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kvm-hello --explain: {} mode, a live run\n", e.mode);
    let _ = writeln!(
        out,
        "Guest physical memory: {} KiB at guest physical 0 (the guest's RAM)",
        GUEST_MEMORY_SIZE / 1024
    );
    for r in guest_regions(e) {
        let _ = writeln!(out, "  {:#08x} - {:#08x}  {}", r.start, r.end, r.what);
    }
    let _ = writeln!(
        out,
        "  everything else is zero; the VMM reserves {RESERVED_START:#x} and up for its tables\n"
    );

    let _ = writeln!(out, "kvm-hello's virtual memory (host virtual addresses)");
    let _ = writeln!(
        out,
        "  {}  guest memory, 2 MiB (anonymous mmap by vm-memory)",
        span(e.host_base, GUEST_MEMORY_SIZE as u64)
    );
    let _ = writeln!(
        out,
        "  {}  kvm_run of vCPU 0, {} bytes (mmap of the vCPU fd by kvm-ioctls)",
        span(e.kvm_run.address, e.kvm_run.size as u64),
        e.kvm_run.size
    );
    let _ = writeln!(out, "  guest physical X is host virtual {:#x} + X\n", e.host_base);

    if e.tables.is_empty() {
        let _ = writeln!(out, "Page tables: none ({} mode does not page)\n", e.mode);
    } else {
        let _ = writeln!(out, "Page tables (CR3 = {:#x}); every entry not listed is 0", e.cr3);
        for table in &e.tables {
            for (index, value) in &table.entries {
                let target = if value & PTE_PS != 0 {
                    let large_page_mask = if table.entry_size == 4 {
                        0xffc0_0000
                    } else {
                        ENTRY_ADDR_MASK & !0x1f_ffff
                    };
                    format!("maps the large page at {:#x}", value & large_page_mask)
                } else {
                    format!("points at the table at {:#x}", value & ENTRY_ADDR_MASK)
                };
                let _ = writeln!(
                    out,
                    "  {}[{index}] at {:#x} = {value:#x} ({}): {target}",
                    table.name,
                    table.addr + index * table.entry_size,
                    entry_flags(*value)
                );
            }
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "Walk of guest virtual {:#x}", e.walk_gva);
    walk_lines(e, &mut out);
    let _ = writeln!(out);

    let _ = writeln!(out, "Exits ({}), in order: every return from KVM_RUN", e.exits.len());
    for (i, event) in e.exits.iter().enumerate() {
        let _ = writeln!(out, "  {:>3}  {}", i + 1, exit_label(event));
    }
    let _ = writeln!(
        out,
        "\nThe guest wrote {:?} to port 0xe9.",
        String::from_utf8_lossy(output)
    );
    out
}
