//! `kvm-hello --explain`: pictures of the live VM. What a run recorded (the memory layout, both
//! address spaces, the page tables, a walk, every exit) as text and as SVG for the book.

use std::fmt::Write as _;
use std::path::Path;

use kit_common::{GUEST_MEMORY_SIZE, Mode, RESERVED_START, RESULT_ADDR};
use kvm_ioctls::VcpuExit;
use lab1_memory::KvmRunMapping;
use lab2_paging::{
    ENTRIES_PER_TABLE, ENTRY_ADDR_MASK, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PS, TABLE32_SIZE, Walk,
    entry_flags,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// One exit, as the timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    /// `io out`, `io in`, `hlt`, `mmio`, `shutdown`, or the exit's name.
    pub kind: String,
    /// The port of an I/O exit.
    pub port: Option<u16>,
    /// The bytes of an OUT.
    pub data: Vec<u8>,
    /// Where KVM put an I/O exit's data: `kvm_run.io.data_offset`, bytes from the start of kvm_run.
    pub data_offset: Option<u64>,
}

impl ExitEvent {
    /// Records an exit; `kvm_run` is the address of the vCPU's kvm_run mapping.
    pub fn of(exit: &VcpuExit<'_>, kvm_run: u64) -> ExitEvent {
        let offset = |data: &[u8]| Some((data.as_ptr() as u64).wrapping_sub(kvm_run));
        let (kind, port, data, data_offset) = match exit {
            VcpuExit::IoOut(port, data) => ("io out".to_owned(), Some(*port), data.to_vec(), offset(data)),
            VcpuExit::IoIn(port, data) => ("io in".to_owned(), Some(*port), Vec::new(), offset(data)),
            VcpuExit::Hlt => ("hlt".to_owned(), None, Vec::new(), None),
            VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => ("mmio".to_owned(), None, Vec::new(), None),
            VcpuExit::Shutdown => ("shutdown".to_owned(), None, Vec::new(), None),
            other => (format!("{other:?}"), None, Vec::new(), None),
        };
        ExitEvent {
            kind,
            port,
            data,
            data_offset,
        }
    }
}

/// A page table's non-zero entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// PML4, PDPT, PD or PD32.
    pub name: &'static str,
    /// Its guest physical address.
    pub addr: u64,
    /// Bytes per entry: 8, or 4 for PD32.
    pub entry_size: u64,
    /// (index, value) of every entry that is not 0.
    pub entries: Vec<(u64, u64)>,
}

/// Everything `--explain` shows, recorded during a run.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The CPU mode.
    pub mode: Mode,
    /// The image's size in bytes.
    pub image_len: usize,
    /// Host virtual address of guest physical 0.
    pub host_base: u64,
    /// The vCPU's kvm_run mapping.
    pub kvm_run: KvmRunMapping,
    /// CR3 (0 without paging).
    pub cr3: u64,
    /// RSP when the guest started.
    pub rsp: u64,
    /// The page tables as the guest found them.
    pub tables: Vec<Table>,
    /// The walk of the `--walk` address (long mode).
    pub walk: Option<Walk>,
    /// The guest virtual address walked.
    pub walk_gva: u64,
    /// Every exit, in order.
    pub exits: Vec<ExitEvent>,
}

/// Reads the page tables a mode uses out of guest memory.
pub fn read_tables(memory: &GuestMemoryMmap, mode: Mode) -> Vec<Table> {
    let read = |name, addr: u64, entry_size: u64, count: u64| {
        let entries = (0..count)
            .filter_map(|index| {
                let at = GuestAddress(addr + index * entry_size);
                let value = if entry_size == 8 {
                    memory.read_obj::<u64>(at).ok()?
                } else {
                    u64::from(memory.read_obj::<u32>(at).ok()?)
                };
                (value != 0).then_some((index, value))
            })
            .collect();
        Table {
            name,
            addr,
            entry_size,
            entries,
        }
    };
    match mode {
        Mode::Long => vec![
            read("PML4", PML4_ADDR, 8, ENTRIES_PER_TABLE),
            read("PDPT", PDPT_ADDR, 8, ENTRIES_PER_TABLE),
            read("PD", PD_ADDR, 8, ENTRIES_PER_TABLE),
        ],
        Mode::Paged32 => vec![read("PD32", PD32_ADDR, 4, TABLE32_SIZE / 4)],
        Mode::Real | Mode::Protected => Vec::new(),
    }
}

/// One region of guest physical memory.
struct Region {
    start: u64,
    end: u64,
    what: String,
}

fn guest_regions(e: &Explanation) -> Vec<Region> {
    let mut regions = vec![Region {
        start: 0,
        end: e.image_len.max(1) as u64 - 1,
        what: format!(
            "guest code and data: the image, {} bytes (RIP starts at 0)",
            e.image_len
        ),
    }];
    let width = e.mode.result_width() as u64;
    regions.push(Region {
        start: RESULT_ADDR,
        end: RESULT_ADDR + width - 1,
        what: format!("the result slot: 42, {width} bytes"),
    });
    for table in &e.tables {
        let size = lab2_paging::TABLE_SIZE; // 512 x 8 bytes, or 1024 x 4 for PD32
        let cr3 = if table.addr == e.cr3 { " (CR3)" } else { "" };
        regions.push(Region {
            start: table.addr,
            end: table.addr + size - 1,
            what: format!("{}{cr3}", table.name),
        });
    }
    if e.rsp > 0 {
        regions.push(Region {
            start: e.rsp - 0x1000,
            end: e.rsp - 1,
            what: format!("the stack's top page: RSP starts at {:#x} and grows down", e.rsp),
        });
    } else {
        regions.push(Region {
            start: 0xf000,
            end: 0xffff,
            what: "the real-mode stack's top: SP starts at 0 and wraps to 0xfffe".into(),
        });
    }
    regions
}

/// The index fields a walk used: every level down to the one that mapped the page (all four
/// when the walk stopped early).
fn walk_fields(walk: &Walk) -> Vec<(&'static str, u32)> {
    let levels = match walk.result {
        Ok(_) => walk.steps.len(),
        Err(_) => 4,
    };
    lab2_paging::Level::WALK
        .iter()
        .take(levels.max(1))
        .map(|level| (level.name(), level.shift()))
        .collect()
}

/// The offset bits below the last level used: 12 for a 4 KiB page, 21 for 2 MiB, 30 for 1 GiB.
fn offset_bits(walk: &Walk) -> u32 {
    match (walk.result, walk.steps.last()) {
        (Ok(_), Some(step)) => step.level.shift(),
        _ => 12,
    }
}

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
                "  guest virtual {gva:#x} -> guest physical {gpa:#x} -> host virtual {:#x}",
                e.host_base + gpa
            );
        }
        Err(fault) => {
            let _ = writeln!(out, "  no translation: {fault} (the guest would take a page fault)");
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
    let guest_end = e.host_base + GUEST_MEMORY_SIZE as u64 - 1;
    let _ = writeln!(
        out,
        "  {:#x} - {guest_end:#x}  guest memory, 2 MiB (anonymous mmap by vm-memory)",
        e.host_base
    );
    let run_end = e.kvm_run.address + e.kvm_run.size as u64 - 1;
    let _ = writeln!(
        out,
        "  {:#x} - {run_end:#x}  kvm_run of vCPU 0, {} bytes (mmap of the vCPU fd by kvm-ioctls)",
        e.kvm_run.address, e.kvm_run.size
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

/// The guest physical memory map.
pub fn svg_guest_physical(e: &Explanation) -> String {
    let regions = guest_regions(e);
    let mut svg = Svg::new(
        760,
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
    let mut svg = Svg::new(760, 300, "kvm-hello's virtual address space (host virtual addresses)");
    svg.rect(16, 60, 300, 80, "#cde4ff");
    svg.text(26, 84, 13, "bold", "guest memory, 2 MiB");
    svg.text(26, 104, 12, "normal", &format!("{:#x}", e.host_base));
    svg.text(26, 124, 12, "normal", "anonymous mmap (vm-memory), slot 0");
    svg.rect(16, 170, 300, 80, "#ffe6c7");
    svg.text(
        26,
        194,
        13,
        "bold",
        &format!("kvm_run of vCPU 0, {} bytes", e.kvm_run.size),
    );
    svg.text(26, 214, 12, "normal", &format!("{:#x}", e.kvm_run.address));
    svg.text(26, 234, 12, "normal", "mmap of the vCPU fd (kvm-ioctls)");
    svg.rect(440, 60, 300, 80, "#eef3e2");
    svg.text(450, 84, 13, "bold", "the guest's physical memory");
    svg.text(450, 104, 12, "normal", "0x0 - 0x1fffff");
    svg.text(450, 124, 12, "normal", "KVM_SET_USER_MEMORY_REGION");
    svg.arrow(440, 100, 318, 100);
    svg.rect(440, 170, 300, 80, "#f3e2ee");
    svg.text(450, 194, 13, "bold", "KVM (the kernel)");
    svg.text(450, 214, 12, "normal", "exit reason, io.port, io.size,");
    svg.text(450, 234, 12, "normal", "io.count, data at io.data_offset");
    svg.arrow(440, 210, 318, 210);
    svg.text(
        16,
        280,
        12,
        "normal",
        &format!("guest physical X = host virtual {:#x} + X", e.host_base),
    );
    svg.finish()
}

/// The page-table walk of the `--walk` address.
pub fn svg_page_walk(e: &Explanation) -> String {
    let mut svg = Svg::new(
        860,
        330,
        &format!("Page walk of guest virtual {:#x} ({} mode)", e.walk_gva, e.mode),
    );
    let Some(walk) = &e.walk else {
        svg.text(16, 70, 13, "normal", "no page walk in this mode");
        return svg.finish();
    };
    let gva = walk.gva;
    let fields = walk_fields(walk);
    for (i, (name, shift)) in fields.iter().enumerate() {
        let x = 16 + 150 * i as u32;
        svg.rect(x, 50, 140, 44, "#eef3e2");
        svg.text(x + 8, 68, 12, "normal", &format!("bits {}..{}", shift + 8, shift));
        svg.text(
            x + 8,
            86,
            12,
            "bold",
            &format!("{name} index {}", (gva >> shift) & 0x1ff),
        );
    }
    let bits = offset_bits(walk);
    let x = 16 + 150 * fields.len() as u32;
    svg.rect(x, 50, 140, 44, "#eef3e2");
    svg.text(x + 8, 68, 12, "normal", &format!("bits {}..0", bits - 1));
    svg.text(x + 8, 86, 12, "bold", &format!("offset {:#x}", gva & ((1 << bits) - 1)));
    svg.rect(16, 130, 110, 44, "#ffe6c7");
    svg.text(24, 157, 12, "bold", &format!("CR3 {:#x}", e.cr3));
    let mut right_edge = 126;
    for (i, step) in walk.steps.iter().enumerate() {
        let x = 166 + 150 * i as u32;
        svg.arrow(right_edge, 152, x, 152);
        svg.rect(x, 130, 140, 64, "#cde4ff");
        svg.text(
            x + 8,
            150,
            12,
            "bold",
            &format!("{}[{}]", step.level.name(), step.index),
        );
        svg.text(x + 8, 168, 12, "normal", &format!("{:#x}", step.entry));
        svg.text(x + 8, 186, 11, "normal", &entry_flags(step.entry));
        right_edge = x + 140;
    }
    let result = match walk.result {
        Ok(gpa) => format!("guest physical {gpa:#x} = host virtual {:#x}", e.host_base + gpa),
        Err(fault) => format!("no translation: {fault}"),
    };
    svg.text(16, 240, 13, "bold", &result);
    if walk.steps.last().is_some_and(|s| s.entry & PTE_PS != 0) {
        svg.text(
            16,
            264,
            12,
            "normal",
            "the last entry has PS: it maps a large page, and the low bits of the address are the offset",
        );
    }
    svg.finish()
}

/// The exits of the run, in order.
pub fn svg_exit_timeline(e: &Explanation) -> String {
    let columns = e.exits.len().max(1) as u32;
    let width = (60 + 46 * columns).max(420);
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
        let x = 20 + 46 * i as u32;
        let (fill, label) = match event.kind.as_str() {
            "io out" => (
                "#cde4ff",
                String::from_utf8_lossy(&event.data).escape_debug().to_string(),
            ),
            "hlt" => ("#ffe6c7", "HLT".to_owned()),
            other => ("#f8c8c8", other.to_owned()),
        };
        svg.rect(x, 70, 40, 44, fill);
        svg.text(x + 6, 97, 13, "bold", &label);
        svg.text(x + 6, 150, 11, "normal", &format!("{}", i + 1));
    }
    svg.text(
        16,
        178,
        12,
        "normal",
        "blue: KVM_EXIT_IO, an OUT to port 0xe9 (one byte each); orange: KVM_EXIT_HLT",
    );
    svg.finish()
}

/// The SVG files `--svg DIR` writes, by name.
pub fn svg_files(e: &Explanation) -> [(&'static str, String); 4] {
    [
        ("guest-physical.svg", svg_guest_physical(e)),
        ("vmm-virtual.svg", svg_vmm_virtual(e)),
        ("page-walk.svg", svg_page_walk(e)),
        ("exit-timeline.svg", svg_exit_timeline(e)),
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
