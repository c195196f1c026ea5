//! What `--explain` (and `--step`, for its exits) records of a run: the memory layout, the page
//! tables, a walk, every exit; and the pure facts both drawings derive from it.

use kit_common::{GUEST_MEMORY_SIZE, Mode, RESULT_ADDR};
use kvm_ioctls::VcpuExit;
use lab1_memory::KvmRunMapping;
use lab2_paging::{ENTRIES_PER_TABLE, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, TABLE32_SIZE, Walk};
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

/// The stack page `--explain` shows below the initial RSP.
pub(crate) const STACK_PAGE: u64 = 0x1000;

/// `start - end` of `len` bytes at `start`, also for values no real run has (they come from lab
/// code): an empty range, or one that would pass the end of the address space, says so.
pub(crate) fn span(start: u64, len: u64) -> String {
    match len.checked_sub(1).map(|last| start.checked_add(last)) {
        None => format!("{start:#x} (empty: 0 bytes)"),
        Some(None) => format!("{start:#x} - past the end of the 64-bit address space"),
        Some(Some(end)) => format!("{start:#x} - {end:#x}"),
    }
}

/// The host virtual address of guest physical `gpa`, when it lies in guest memory.
pub(crate) fn host_address(host_base: u64, gpa: u64) -> Option<u64> {
    if gpa >= GUEST_MEMORY_SIZE as u64 {
        return None;
    }
    host_base.checked_add(gpa)
}

/// What a walk's guest physical address is in the host.
pub(crate) fn host_of(host_base: u64, gpa: u64) -> String {
    match host_address(host_base, gpa) {
        Some(hva) => format!("host virtual {hva:#x}"),
        None => "no host address: it lies outside guest memory".to_owned(),
    }
}

/// One region of guest physical memory.
pub(crate) struct Region {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) what: String,
}

pub(crate) fn guest_regions(e: &Explanation) -> Vec<Region> {
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
            // RSP comes from lab 3: below one page, the picture starts at 0.
            start: e.rsp.saturating_sub(STACK_PAGE),
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
pub(crate) fn walk_fields(walk: &Walk) -> Vec<(&'static str, u32)> {
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
pub(crate) fn offset_bits(walk: &Walk) -> u32 {
    match (walk.result, walk.steps.last()) {
        (Ok(_), Some(step)) => step.level.shift(),
        _ => 12,
    }
}
