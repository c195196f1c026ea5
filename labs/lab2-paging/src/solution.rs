//! The reference solution of lab 2 (built with `--features solution`).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{
    ENTRY_ADDR_MASK, Lab2Error, Level, PD_ADDR, PD32_ADDR, PDPT_ADDR, PML4_ADDR, PTE_PRESENT,
    PTE_PS, PTE_RW, PTE_USER, TABLE_SIZE, TABLE32_SIZE, Walk, WalkFault, WalkStep,
};

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
        let maps_page =
            level == Level::Pt || (entry & PTE_PS != 0 && matches!(level, Level::Pdpt | Level::Pd));
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
