//! `--explain`'s pictures as SVG, for the book.

use std::fmt::Write as _;
use std::path::Path;

use kit_common::GUEST_MEMORY_SIZE;
use lab2_paging::{PTE_PS, Walk, entry_flags};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::model::*;

/// The widest picture the book shows at its natural size (mdBook scales wider images down,
/// and 12 px text with them).
const BOOK_WIDTH: u32 = 740;

/// Escapes text for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Svg {
    body: String,
    width: u32,
    height: u32,
}

impl Svg {
    fn new(width: u32, height: u32, title: &str) -> Svg {
        let mut svg = Svg {
            body: String::new(),
            width,
            height,
        };
        svg.text(16, 28, 16, "bold", title);
        svg
    }

    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, fill: &str) {
        let _ = writeln!(
            self.body,
            r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{fill}" stroke="#333"/>"##
        );
    }

    fn text(&mut self, x: u32, y: u32, size: u32, weight: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}">{}</text>"#,
            esc(text)
        );
    }

    fn arrow(&mut self, x1: u32, y1: u32, x2: u32, y2: u32) {
        let _ = writeln!(
            self.body,
            r##"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#333" marker-end="url(#arrow)"/>"##
        );
    }

    fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"monospace\">\n\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#333\"/></marker></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

/// The largest x a column starts at: far beyond any picture, with room for the column's width.
const COLUMN_X_MAX: u32 = u32::MAX / 2;

/// The x of column `i` of a picture: capped instead of overflowing for the lengths lab code may
/// produce (a walk with thousands of steps, a run with millions of exits).
fn column_x(left: u32, step: u32, i: usize) -> u32 {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    left.saturating_add(step.saturating_mul(i)).min(COLUMN_X_MAX)
}

/// The guest physical memory map.
pub fn svg_guest_physical(e: &Explanation) -> String {
    let regions = guest_regions(e);
    let mut svg = Svg::new(
        BOOK_WIDTH,
        90 + 52 * regions.len() as u32,
        &format!("Guest physical memory, {} mode (2 MiB; not to scale)", e.mode),
    );
    for (i, r) in regions.iter().rev().enumerate() {
        let y = 50 + 52 * i as u32;
        svg.rect(
            16,
            y,
            200,
            40,
            if r.what.starts_with("guest code") {
                "#cde4ff"
            } else {
                "#eef3e2"
            },
        );
        svg.text(26, y + 25, 12, "normal", &format!("{:#08x}-{:#08x}", r.start, r.end));
        svg.text(232, y + 25, 13, "normal", &r.what);
    }
    svg.text(
        16,
        80 + 52 * regions.len() as u32,
        12,
        "normal",
        "everything else is zero",
    );
    svg.finish()
}

/// kvm-hello's own virtual address space: where guest memory and kvm_run live.
pub fn svg_vmm_virtual(e: &Explanation) -> String {
    let mut svg = Svg::new(
        BOOK_WIDTH,
        300,
        "kvm-hello's virtual address space (host virtual addresses)",
    );
    svg.rect(16, 60, 300, 80, "#cde4ff");
    svg.text(26, 84, 14, "bold", "guest memory, 2 MiB");
    svg.text(26, 104, 13, "normal", &format!("{:#x}", e.host_base));
    svg.text(26, 124, 13, "normal", "anonymous mmap (vm-memory)");
    svg.rect(16, 170, 300, 80, "#ffe6c7");
    svg.text(
        26,
        194,
        14,
        "bold",
        &format!("kvm_run of vCPU 0, {} bytes", e.kvm_run.size),
    );
    svg.text(26, 214, 13, "normal", &format!("{:#x}", e.kvm_run.address));
    svg.text(26, 234, 13, "normal", "mmap of the vCPU fd (kvm-ioctls)");
    svg.rect(424, 60, 300, 80, "#eef3e2");
    svg.text(434, 84, 14, "bold", "the guest's physical memory");
    svg.text(434, 104, 13, "normal", "0x0 - 0x1fffff, memslot 0");
    svg.text(434, 124, 13, "normal", "KVM_SET_USER_MEMORY_REGION");
    svg.arrow(424, 100, 318, 100);
    svg.rect(424, 170, 300, 80, "#f3e2ee");
    svg.text(434, 194, 14, "bold", "KVM (the kernel)");
    svg.text(434, 214, 13, "normal", "exit reason, io.port, io.size,");
    svg.text(434, 234, 13, "normal", "io.count, data at data_offset");
    svg.arrow(424, 210, 318, 210);
    svg.text(
        16,
        280,
        13,
        "normal",
        &format!("guest physical X = host virtual {:#x} + X", e.host_base),
    );
    svg.finish()
}

/// The page-table walk of the `--walk` address.
pub fn svg_page_walk(e: &Explanation) -> String {
    let title = format!("Page walk of guest virtual {:#x} ({} mode)", e.walk_gva, e.mode);
    match &e.walk {
        Some(walk) => draw_walk(&title, walk, e.cr3, Some(e.host_base)),
        None => {
            let mut svg = Svg::new(BOOK_WIDTH, 120, &title);
            svg.text(16, 70, 14, "normal", "no page walk in this mode");
            svg.finish()
        }
    }
}

/// Draws one walk: the address split into its fields, then CR3 and every entry read.
fn draw_walk(title: &str, walk: &Walk, cr3: u64, host_base: Option<u64>) -> String {
    const STEP: u32 = 144;
    let mut svg = Svg::new(BOOK_WIDTH, 330, title);
    let gva = walk.gva;
    let fields = walk_fields(walk);
    for (i, (name, shift)) in fields.iter().enumerate() {
        let x = 16 + STEP * i as u32;
        svg.rect(x, 50, 136, 48, "#eef3e2");
        svg.text(x + 8, 69, 12, "normal", &format!("bits {}..{}", shift + 8, shift));
        svg.text(x + 8, 89, 13, "bold", &format!("{name} {}", (gva >> shift) & 0x1ff));
    }
    let bits = offset_bits(walk);
    let x = 16 + STEP * fields.len() as u32;
    svg.rect(x, 50, 136, 48, "#eef3e2");
    svg.text(x + 8, 69, 12, "normal", &format!("bits {}..0", bits - 1));
    svg.text(x + 8, 89, 13, "bold", &format!("offset {:#x}", gva & ((1 << bits) - 1)));
    svg.rect(16, 130, 104, 48, "#ffe6c7");
    svg.text(24, 159, 13, "bold", &format!("CR3 {cr3:#x}"));
    let mut right_edge = 120;
    for (i, step) in walk.steps.iter().enumerate() {
        let x = column_x(160, STEP, i);
        svg.arrow(right_edge, 154, x, 154);
        svg.rect(x, 130, 130, 70, "#cde4ff");
        svg.text(
            x + 8,
            150,
            13,
            "bold",
            &format!("{}[{}]", step.level.name(), step.index),
        );
        svg.text(x + 8, 169, 12, "normal", &format!("{:#x}", step.entry));
        svg.text(x + 8, 188, 12, "normal", &entry_flags(step.entry));
        right_edge = x + 130;
    }
    let result = match (walk.result, host_base) {
        (Ok(gpa), Some(base)) => format!("guest physical {gpa:#x} = {}", host_of(base, gpa)),
        (Ok(gpa), None) => format!("guest physical {gpa:#x}"),
        (Err(fault), _) => format!("no translation: {fault}"),
    };
    svg.text(16, 240, 14, "bold", &result);
    let note = if walk.steps.last().is_some_and(|s| s.entry & PTE_PS != 0) {
        "the last entry has PS: it maps a large page; the low bits are the offset"
    } else if walk.result.is_ok() {
        "no PS on the way: the PT entry maps a 4 KiB page; the low 12 bits are the offset"
    } else {
        ""
    };
    svg.text(16, 266, 13, "normal", note);
    svg.finish()
}

/// The worked example of a four-level walk: tables at 0x10000.., the page at 0x1a5000.
pub const WALK_4K_GVA: u64 = 0x80_8060_4567;

/// The tables of the worked example: (entry address, value) of the one entry in each.
pub const WALK_4K_TABLES: [(u64, u64); 4] = [
    (0x10008, 0x11007),  // PML4[1] -> PDPT at 0x11000
    (0x11010, 0x12007),  // PDPT[2] -> PD at 0x12000
    (0x12018, 0x13007),  // PD[3] -> PT at 0x13000
    (0x13020, 0x1a5007), // PT[4] -> the page at 0x1a5000
];

/// The worked example's CR3.
pub const WALK_4K_CR3: u64 = 0x10000;

/// Walks `WALK_4K_GVA` through the worked example's tables with lab 2's `translate`, in a scratch
/// memory of its own; `None` when the tables cannot be built or the walker panics.
pub fn walk_4k() -> Option<Walk> {
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEMORY_SIZE)]).ok()?;
    for (addr, value) in WALK_4K_TABLES {
        memory.write_obj(value, GuestAddress(addr)).ok()?;
    }
    std::panic::catch_unwind(|| lab2_paging::translate(&memory, WALK_4K_CR3, WALK_4K_GVA)).ok()
}

/// The worked four-level walk (Lab 2): the same drawing as the live walk, through 4 KiB pages.
pub fn svg_page_walk_4k() -> String {
    let title = format!("Page walk of {WALK_4K_GVA:#x} through 4 KiB pages (worked example)");
    match walk_4k() {
        Some(walk) => draw_walk(&title, &walk, WALK_4K_CR3, None),
        None => {
            let mut svg = Svg::new(BOOK_WIDTH, 120, &title);
            svg.text(16, 70, 14, "normal", "lab 2's translate did not finish the walk");
            svg.finish()
        }
    }
}

/// One exit as a round trip (Lab 4): the guest's OUT, KVM, the return to kvm-hello, the next KVM_RUN.
pub fn svg_kvm_run_round_trip(e: &Explanation) -> String {
    let first = e.exits.first();
    let (port, byte, offset) = match first {
        Some(event) => (
            event.port.unwrap_or_default(),
            String::from_utf8_lossy(&event.data).escape_debug().to_string(),
            event.data_offset.unwrap_or_default(),
        ),
        None => (0, String::new(), 0),
    };
    let mut svg = Svg::new(BOOK_WIDTH, 500, "One KVM_RUN round trip: the first exit of the run");
    let lanes = [
        (110, "guest (vCPU)", "#cde4ff"),
        (370, "KVM (kernel)", "#f3e2ee"),
        (630, "kvm-hello", "#ffe6c7"),
    ];
    for (x, name, fill) in lanes {
        svg.rect(x - 90, 48, 180, 32, fill);
        svg.text(x - 80, 69, 14, "bold", name);
        let _ = writeln!(
            svg.body,
            r##"<line x1="{x}" y1="80" x2="{x}" y2="470" stroke="#999" stroke-dasharray="4 4"/>"##
        );
    }
    svg.text(
        120,
        110,
        13,
        "normal",
        &format!("out dx, al  (DX = {port:#x}, AL = '{byte}')"),
    );
    svg.arrow(110, 140, 370, 140);
    svg.text(126, 134, 13, "normal", "VM exit: the OUT traps");
    svg.text(380, 170, 13, "normal", "no device owns the port:");
    svg.text(380, 190, 13, "normal", &format!("kvm_run.io, data at +{offset:#x}"));
    svg.arrow(370, 220, 630, 220);
    svg.text(386, 214, 13, "normal", "KVM_RUN returns");
    svg.text(380, 250, 13, "normal", &format!("kvm_run at {:#x}", e.kvm_run.address));
    svg.text(400, 280, 13, "normal", &format!("VcpuExit::IoOut({port:#x}, {byte:?})"));
    svg.text(400, 300, 13, "normal", "handle_exit: print, count");
    svg.arrow(630, 330, 370, 330);
    svg.text(386, 324, 13, "normal", "KVM_RUN again");
    svg.arrow(370, 380, 110, 380);
    svg.text(126, 374, 13, "normal", "VM entry after the out");
    svg.text(120, 410, 13, "normal", "on to the next OUT");
    svg.text(
        16,
        494,
        13,
        "normal",
        "Exits KVM handles itself (interrupts, page faults) never reach kvm-hello.",
    );
    svg.finish()
}

/// The exits of the run, in order.
pub fn svg_exit_timeline(e: &Explanation) -> String {
    let columns = u32::try_from(e.exits.len().max(1)).unwrap_or(u32::MAX);
    let width = 44u32.saturating_mul(columns).saturating_add(60).clamp(420, BOOK_WIDTH);
    let column = ((width - 60) / columns).min(44);
    let mut svg = Svg::new(
        width,
        190,
        &format!(
            "Exits of the {} mode guest, in order: {} returns from KVM_RUN",
            e.mode,
            e.exits.len()
        ),
    );
    svg.arrow(16, 130, width - 10, 130);
    for (i, event) in e.exits.iter().enumerate() {
        let x = column_x(20, column, i);
        let (fill, label) = match event.kind.as_str() {
            "io out" => (
                "#cde4ff",
                String::from_utf8_lossy(&event.data).escape_debug().to_string(),
            ),
            "hlt" => ("#ffe6c7", "HLT".to_owned()),
            other => ("#f8c8c8", other.to_owned()),
        };
        svg.rect(x, 70, column.saturating_sub(4), 44, fill);
        svg.text(x + 6, 97, 14, "bold", &label);
        svg.text(x + 6, 150, 12, "normal", &format!("{}", i + 1));
    }
    svg.text(
        16,
        178,
        12,
        "normal",
        "blue: KVM_EXIT_IO, OUT to 0xe9 (a byte each); orange: KVM_EXIT_HLT",
    );
    svg.finish()
}

/// The SVG files `--svg DIR` writes, by name.
pub fn svg_files(e: &Explanation) -> [(&'static str, String); 6] {
    [
        ("guest-physical.svg", svg_guest_physical(e)),
        ("vmm-virtual.svg", svg_vmm_virtual(e)),
        ("page-walk.svg", svg_page_walk(e)),
        ("page-walk-4k.svg", svg_page_walk_4k()),
        ("exit-timeline.svg", svg_exit_timeline(e)),
        ("kvm-run-round-trip.svg", svg_kvm_run_round_trip(e)),
    ]
}

/// Writes the SVG pictures into `dir`.
pub fn write_svgs(e: &Explanation, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, svg) in svg_files(e) {
        std::fs::write(dir.join(name), svg)?;
    }
    Ok(())
}
