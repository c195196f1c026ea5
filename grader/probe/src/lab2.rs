//! Lab 2: the tables the lab builds, and its walks of the judge's tables.

use grader_protocol::lab2::{self as wire, LongModeTables, Paged32Directory, Tables, Translate};
use grader_protocol::{Envelope, Request};
use lab2_paging::{Level, Walk, WalkFault};
use vm_memory::GuestMemoryMmap;

use crate::{Handled, Probe, handle, memory};

/// Answers lab 2's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let labs = &probe.labs;
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        LongModeTables::NAME => handle(body, |_: LongModeTables| tables(labs.setup_long_mode_page_tables)),
        Paged32Directory::NAME => handle(body, |_: Paged32Directory| tables(labs.setup_paged32_page_directory)),
        Translate::NAME => handle(body, |request: Translate| {
            let memory = memory::fresh()?;
            memory::fill(&memory, &request.memory)?;
            Ok(request
                .gvas
                .iter()
                .map(|&gva| observed((labs.translate)(&memory, request.cr3, gva)))
                .collect())
        }),
        _ => return None,
    })
}

fn tables<E: std::fmt::Display>(build: fn(&GuestMemoryMmap) -> Result<u64, E>) -> Result<Tables, String> {
    let memory = memory::fresh()?;
    let cr3 = build(&memory).map_err(|err| err.to_string());
    Ok(Tables {
        cr3,
        memory: memory::nonzero_words(&memory),
    })
}

fn level(level: Level) -> wire::Level {
    match level {
        Level::Pml4 => wire::Level::Pml4,
        Level::Pdpt => wire::Level::Pdpt,
        Level::Pd => wire::Level::Pd,
        Level::Pt => wire::Level::Pt,
    }
}

/// The lab's walk, as the wire carries it.
fn observed(walk: Walk) -> wire::Walk {
    wire::Walk {
        gva: walk.gva,
        steps: walk
            .steps
            .iter()
            .map(|s| wire::WalkStep {
                level: level(s.level),
                index: s.index,
                entry_addr: s.entry_addr,
                entry: s.entry,
            })
            .collect(),
        result: walk.result.map_err(|fault| match fault {
            WalkFault::NonCanonical(gva) => wire::WalkFault::NonCanonical(gva),
            WalkFault::NotPresent(l) => wire::WalkFault::NotPresent(level(l)),
            WalkFault::TableOutsideMemory { level: l, addr } => {
                wire::WalkFault::TableOutsideMemory { level: level(l), addr }
            }
        }),
    }
}
