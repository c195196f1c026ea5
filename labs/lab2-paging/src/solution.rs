//! The reference solution of lab 2 (built with `--features solution`).

// ANCHOR: imports
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{
    ENTRY_ADDR_MASK, Lab2Error, Level, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, PTE_USER,
    TABLE_SIZE, TABLE32_SIZE, Walk, WalkFault, WalkStep,
};
// ANCHOR_END: imports

// ANCHOR: helpers
fn write_u64(memory: &GuestMemoryMmap, addr: u64, value: u64) -> Result<(), Lab2Error> {
    memory
        .write_obj(value, GuestAddress(addr))
        .map_err(|source| Lab2Error::WriteTable { addr, source })
}

fn clear_table(memory: &GuestMemoryMmap, addr: u64, size: u64) -> Result<(), Lab2Error> {
    let zeros = [0u8; TABLE_SIZE as usize];
    memory
        .write_slice(&zeros[..size as usize], GuestAddress(addr))
        .map_err(|source| Lab2Error::WriteTable { addr, source })
}
// ANCHOR_END: helpers

// ANCHOR: long_mode_tables
pub fn setup_long_mode_page_tables(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
    const FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_USER;
    for table in [PML4_ADDR, PDPT_ADDR, PD_ADDR] {
        clear_table(memory, table, TABLE_SIZE)?;
    }
    write_u64(memory, PML4_ADDR, PDPT_ADDR | FLAGS)?; // PML4[0] -> PDPT
    write_u64(memory, PDPT_ADDR, PD_ADDR | FLAGS)?; // PDPT[0] -> PD
    write_u64(memory, PD_ADDR, FLAGS | PTE_PS)?; // PD[0] maps 0..2 MiB
    Ok(PML4_ADDR)
}
// ANCHOR_END: long_mode_tables

// ANCHOR: paged32_directory
pub fn setup_paged32_page_directory(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
    clear_table(memory, PD32_ADDR, TABLE32_SIZE)?;
    let pde = (PTE_PRESENT | PTE_RW | PTE_USER | PTE_PS) as u32; // PD[0] maps 0..4 MiB
    memory
        .write_obj(pde, GuestAddress(PD32_ADDR))
        .map_err(|source| Lab2Error::WriteTable {
            addr: PD32_ADDR,
            source,
        })?;
    Ok(PD32_ADDR)
}
// ANCHOR_END: paged32_directory

// ANCHOR: translate
pub fn translate(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
    let mut walk = Walk {
        gva,
        steps: Vec::with_capacity(4),
        result: Err(WalkFault::NonCanonical(gva)),
    };
    // Sign-extending bit 47 must give the address back.
    if ((gva << 16) as i64 >> 16) as u64 != gva {
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
        let maps_page = level == Level::Pt || (entry & PTE_PS != 0 && matches!(level, Level::Pdpt | Level::Pd));
        if maps_page {
            let offset_mask = (1u64 << level.shift()) - 1;
            walk.result = Ok((entry & ENTRY_ADDR_MASK & !offset_mask) | (gva & offset_mask));
            return walk;
        }
        table = entry & ENTRY_ADDR_MASK;
    }
    unreachable!("the PT level always maps a page")
}
// ANCHOR_END: translate

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::entry_flags;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    fn entries(memory: &GuestMemoryMmap, table: u64) -> Vec<u64> {
        (0..512)
            .map(|i| memory.read_obj::<u64>(GuestAddress(table + i * 8)).unwrap())
            .collect()
    }

    #[test]
    fn long_mode_tables_hold_exactly_the_three_entries() {
        let memory = memory();
        memory.write_slice(&[0xff; 0x3000], GuestAddress(PML4_ADDR)).unwrap(); // stale bytes
        assert_eq!(setup_long_mode_page_tables(&memory).unwrap(), 0x2000);
        for (table, first) in [(PML4_ADDR, 0x3007), (PDPT_ADDR, 0x4007), (PD_ADDR, 0x87)] {
            let entries = entries(&memory, table);
            assert_eq!(entries[0], first, "entry 0 of the table at {table:#x}");
            assert!(entries[1..].iter().all(|&e| e == 0), "table at {table:#x} maps more");
        }
        assert_eq!(entry_flags(0x87), "P|RW|US|PS");
    }

    #[test]
    fn paged32_directory_maps_one_4mib_page() {
        let memory = memory();
        assert_eq!(setup_paged32_page_directory(&memory).unwrap(), 0x2000);
        let pdes: Vec<u32> = (0..1024)
            .map(|i| memory.read_obj(GuestAddress(PD32_ADDR + i * 4)).unwrap())
            .collect();
        assert_eq!(pdes[0], 0x87);
        assert!(pdes[1..].iter().all(|&e| e == 0));
    }

    #[test]
    fn the_walk_of_the_identity_map_returns_every_level() {
        let memory = memory();
        let cr3 = setup_long_mode_page_tables(&memory).unwrap();
        let walk = translate(&memory, cr3, 0x400);
        let seen: Vec<(Level, u64, u64, u64)> = walk
            .steps
            .iter()
            .map(|s| (s.level, s.index, s.entry_addr, s.entry))
            .collect();
        assert_eq!(
            seen,
            [
                (Level::Pml4, 0, 0x2000, 0x3007),
                (Level::Pdpt, 0, 0x3000, 0x4007),
                (Level::Pd, 0, 0x4000, 0x87)
            ]
        );
        assert_eq!(walk.result, Ok(0x400));
        assert_eq!(translate(&memory, cr3, 0x1f_ffff).result, Ok(0x1f_ffff));
        let beyond = translate(&memory, cr3, 0x20_0000);
        assert_eq!(beyond.result, Err(WalkFault::NotPresent(Level::Pd)));
        assert_eq!(beyond.steps[2].index, 1);
        assert_eq!(
            translate(&memory, cr3, 0x8000_0000_0000).result,
            Err(WalkFault::NonCanonical(0x8000_0000_0000))
        );
    }

    #[test]
    fn the_walk_follows_4kib_and_1gib_pages() {
        let memory = memory();
        // PML4[1] -> PDPT at 0x10000; its entry 2 -> PD at 0x11000; entry 3 -> PT at 0x12000;
        // entry 4 maps the 4 KiB page at 0x5000.
        let gva = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x123;
        let flags = PTE_PRESENT | PTE_RW;
        for (addr, value) in [
            (0x2008, 0x10000 | flags),
            (0x10010, 0x11000 | flags),
            (0x11018, 0x12000 | flags),
            (0x12020, 0x5000 | flags),
        ] {
            memory.write_obj::<u64>(value, GuestAddress(addr)).unwrap();
        }
        let walk = translate(&memory, 0x2000, gva);
        assert_eq!(walk.steps.iter().map(|s| s.index).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(walk.result, Ok(0x5123));
        // A PS entry in the PDPT maps 1 GiB.
        memory
            .write_obj::<u64>(0x4000_0000 | flags | PTE_PS, GuestAddress(0x10018))
            .unwrap();
        let gva = (1 << 39) | (3 << 30) | 0x12_3456;
        assert_eq!(translate(&memory, 0x2000, gva).result, Ok(0x4012_3456));
        // A table beyond guest memory.
        memory
            .write_obj::<u64>(0x4000_0000 | flags, GuestAddress(0x2010))
            .unwrap();
        let walk = translate(&memory, 0x2000, 2 << 39);
        assert_eq!(
            walk.result,
            Err(WalkFault::TableOutsideMemory {
                level: Level::Pdpt,
                addr: 0x4000_0000
            })
        );
    }
}
