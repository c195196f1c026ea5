//! Seeded mistakes of labs 2 and 5 that random inputs must catch, applied to the reference one at
//! a time: each must fail its check on every seed, with a message that names the mistake. The
//! large-page walk that keeps bit 12 (PAT) in the physical address once scored full marks in
//! both labs; values at the edges of their width (0, the largest, the sign bit) come next.
#![cfg(feature = "solution")]

mod common;

use common::causes::{Mistake, assert_no_wrong_cause};
use common::outcome_of;
use grader::runner::Outcome;
use grader_probe::Labs;
use lab2_paging::{Level, Walk};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Seeds each check is run with: enough that a mistake caught only on some tables shows.
const SEEDS: u64 = 16;

/// Runs `check` with the mistake on `SEEDS` seeds (from `GRADER_SEED` or fresh ones); asserts
/// that every run fails and that each message names every phrase.
fn fails_on_every_seed(check: &str, seed_mistake: impl Fn(&mut Labs), place: &str, phrases: &[&str]) {
    let first = common::seed();
    for seed in first..first + SEEDS {
        let mut labs = Labs::BUILT;
        seed_mistake(&mut labs);
        let message = match outcome_of(check, labs, seed) {
            Outcome::Failed(message) => message,
            other => panic!("{check}: the seeded mistake was not caught with seed {seed}: {other:?}"),
        };
        if seed == first {
            eprintln!("{check} (seed {seed}): {message}");
        }
        assert!(
            message.starts_with(place),
            "seed {seed}: {message:?} does not start with {place:?}"
        );
        assert!(message.contains("(book: "), "seed {seed}: {message:?} names no chapter");
        for phrase in phrases {
            assert!(
                message.contains(phrase),
                "seed {seed}: {message:?} does not say {phrase:?}"
            );
        }
    }
}

/// Every seeded mistake of this file and the place it seeds, for the wrong-cause sweep.
#[rustfmt::skip]
const MISTAKES: &[Mistake] = &[
    Mistake::new("large_page_walk_that_keeps_the_pat_bit", "lab2 translate", |labs| labs.translate = walk_keeping_pat),
    Mistake::new("large_page_walk_with_an_offset_of_12_bits", "lab2 translate", |labs| labs.translate = walk_with_an_offset_of_12_bits),
    Mistake::new("gva_to_hva_that_keeps_the_pat_bit", "lab5 gva_to_hva", |labs| labs.gva_to_hva = gva_to_hva_keeping_pat),
    Mistake::new("read_guest_string_that_keeps_the_pat_bit", "lab5 read_guest_string", |labs| labs.read_guest_string = read_string_keeping_pat),
    Mistake::new("hypercalls_that_keep_the_pat_bit_in_a_guest_run", "lab5 run_hypercalls", |labs| labs.run_hypercalls = run_keeping_pat),
    Mistake::new("print32bit_printed_as_signed", "lab5 handle_hypercall", |labs| labs.handle_hypercall = print32bit_signed),
    Mistake::new("num_exits_answered_in_two_bytes", "lab5 handle_hypercall", |labs| labs.handle_hypercall = num_exits_in_two_bytes),
    Mistake::new("print_str_that_reads_the_next_physical_page", "lab5 run_hypercalls", |labs| labs.run_hypercalls = run_reading_contiguously),
];

/// No failed check names a cause other than the seeded one, over every mistake above: each runs
/// against every check of its lab and the later labs, as `cargo grade` runs them. Long, so
/// ignored here; `cargo xtask ci` runs it.
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn no_seeded_mistake_is_blamed_on_another_cause() {
    assert_no_wrong_cause(MISTAKES);
}

/// The reference walk, with the physical address of a large page made by `address` from the
/// right one, the leaf entry and the GVA.
fn walk_with_large_page_address(
    memory: &GuestMemoryMmap,
    cr3: u64,
    gva: u64,
    address: fn(u64, u64, u64) -> u64,
) -> Walk {
    let mut walk = lab2_paging::translate(memory, cr3, gva);
    if let (Ok(gpa), Some(last)) = (&mut walk.result, walk.steps.last())
        && last.level != Level::Pt
    {
        *gpa = address(*gpa, last.entry, gva);
    }
    walk
}

/// The reference walk, with a large page's address taken by `ENTRY_ADDR_MASK` alone: the
/// entry's bit 12, PAT in a 1 GiB or 2 MiB page entry, stays in the physical address.
fn walk_keeping_pat(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
    walk_with_large_page_address(memory, cr3, gva, |gpa, entry, _| gpa | (entry & 0x1000))
}

#[test]
fn large_page_walk_that_keeps_the_pat_bit() {
    fails_on_every_seed(
        "lab2_translate_other_pages",
        |labs| labs.translate = walk_keeping_pat,
        "lab2 translate: the walk of 0x",
        &["the PAT bit (bit 12) of", "was kept in the physical address"],
    );
}

#[test]
fn large_page_walk_that_keeps_the_pat_bit_in_the_hidden_variant() {
    fails_on_every_seed(
        "lab2_translate_hidden_cr3_flags",
        |labs| labs.translate = walk_keeping_pat,
        "lab2 translate: the walk of 0x",
        &["the PAT bit (bit 12) of", "was kept in the physical address"],
    );
}

/// The reference walk, with a large page's offset taken as the address's low 12 bits, as for a
/// 4 KiB page: the entry's bits 12 and up (PAT among them) make the physical address.
fn walk_with_an_offset_of_12_bits(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
    walk_with_large_page_address(memory, cr3, gva, |_, entry, gva| {
        (entry & 0x000f_ffff_ffff_f000) | (gva & 0xfff)
    })
}

#[test]
fn large_page_walk_with_an_offset_of_12_bits() {
    // Where the address's bits 12 up to the page's offset are 0 and the entry has PAT, keeping
    // PAT gives the same address: the message names both then, and "not 12" either way.
    fails_on_every_seed(
        "lab2_translate_other_pages",
        |labs| labs.translate = walk_with_an_offset_of_12_bits,
        "lab2 translate: the walk of 0x",
        &["page, so the offset is the address's low", "bits, not 12"],
    );
}

/// gva_to_hva through its own walk that keeps the PAT bit.
fn gva_to_hva_keeping_pat(memory: &GuestMemoryMmap, cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
    let gpa = walk_keeping_pat(memory, cr3, gva).result.ok()?;
    memory.get_host_address(GuestAddress(gpa)).ok()?;
    host_base.checked_add(gpa)
}

#[test]
fn gva_to_hva_that_keeps_the_pat_bit() {
    fails_on_every_seed(
        "lab5_gva_to_hva",
        |labs| labs.gva_to_hva = gva_to_hva_keeping_pat,
        "lab5 gva_to_hva: gva_to_hva(0x",
        &["the PAT bit (bit 12) of", "was kept in the guest physical address"],
    );
}

/// read_guest_string through a walk that keeps the PAT bit.
fn read_string_keeping_pat(
    memory: &GuestMemoryMmap,
    cr3: u64,
    gva: u64,
) -> Result<Vec<u8>, lab5_hypercalls::Lab5Error> {
    use vm_memory::Bytes;
    let bad = |reason: lab5_hypercalls::AddressError| lab5_hypercalls::Lab5Error::BadAddress {
        call: "print_str",
        gva,
        reason,
    };
    let mut bytes = Vec::new();
    while bytes.len() <= lab5_hypercalls::MAX_STRING {
        let at = gva + bytes.len() as u64;
        let gpa = walk_keeping_pat(memory, cr3, at).result.map_err(|f| bad(f.into()))?;
        let byte: u8 = memory.read_obj(GuestAddress(gpa)).map_err(|e| bad(e.into()))?;
        if byte == 0 {
            return Ok(bytes);
        }
        bytes.push(byte);
    }
    Err(bad(lab5_hypercalls::AddressError::Unterminated))
}

#[test]
fn read_guest_string_that_keeps_the_pat_bit() {
    fails_on_every_seed(
        "lab5_read_guest_string",
        |labs| labs.read_guest_string = read_string_keeping_pat,
        "lab5 read_guest_string: a ",
        &["page that maps guest physical 0, whose entry has PAT (bit 12"],
    );
}

/// The reference host with its gva_to_hva and print_str hypercalls served through the walk that
/// keeps the PAT bit.
fn hypercalls_keeping_pat(
    exit: kvm_ioctls::VcpuExit<'_>,
    host: &mut lab5_hypercalls::Host<'_>,
    console: &mut dyn std::io::Write,
) -> Result<lab5_hypercalls::Flow, lab5_hypercalls::Lab5Error> {
    use kvm_ioctls::VcpuExit;
    use lab5_hypercalls::{GVA_TO_HVA_PORT, Lab5Error, PRINT_STR_PORT};
    use vm_memory::Bytes;
    let u32_of = |data: &[u8]| u64::from(u32::from_le_bytes(data.try_into().unwrap_or_default()));
    match exit {
        VcpuExit::IoOut(PRINT_STR_PORT, data) if data.len() == 4 => {
            host.counts.io_out += 1;
            let gva = u32_of(data);
            host.record("print_str", &[gva], None);
            let bytes = read_string_keeping_pat(host.memory, host.cr3, gva)?;
            console.write_all(&bytes).map_err(Lab5Error::Console)?;
            Ok(lab5_hypercalls::Flow::Continue)
        }
        VcpuExit::IoOut(GVA_TO_HVA_PORT, data) if data.len() == 4 => {
            host.counts.io_out += 1;
            let slot = u32_of(data);
            let slot_gpa = lab2_paging::translate(host.memory, host.cr3, slot)
                .result
                .expect("the slot translates");
            let gva: u64 = host
                .memory
                .read_obj(GuestAddress(slot_gpa))
                .expect("the slot is in memory");
            let hva = gva_to_hva_keeping_pat(host.memory, host.cr3, host.host_base, gva);
            host.memory
                .write_obj(hva.unwrap_or(0), GuestAddress(slot_gpa))
                .expect("the slot is in memory");
            host.record("gva_to_hva", &[gva], Some(hva.unwrap_or(0)));
            if hva.is_none() {
                console.write_all(b"Invalid GVA\n").map_err(Lab5Error::Console)?;
            }
            Ok(lab5_hypercalls::Flow::Continue)
        }
        other => lab5_hypercalls::handle_hypercall(other, host, console),
    }
}

/// The reference loop, serving exits with `hypercalls_keeping_pat`.
fn run_keeping_pat(
    vcpu: &mut kvm_ioctls::VcpuFd,
    host: &mut lab5_hypercalls::Host<'_>,
    console: &mut dyn std::io::Write,
    trace: &mut dyn FnMut(&kvm_ioctls::VcpuExit<'_>),
) -> Result<(), lab5_hypercalls::Lab5Error> {
    loop {
        let exit = vcpu.run().map_err(lab5_hypercalls::Lab5Error::Run)?;
        trace(&exit);
        if hypercalls_keeping_pat(exit, host, console)? == lab5_hypercalls::Flow::Halt {
            return Ok(());
        }
    }
}

#[test]
fn hypercalls_that_keep_the_pat_bit_in_a_guest_run() {
    // Every made guest translates an address of its alias (a 2 MiB page, PAT set) with
    // gva_to_hva. Without KVM the check is not run, and this test fails saying so.
    fails_on_every_seed(
        "lab5_gva_to_hva_live",
        |labs| labs.run_hypercalls = run_keeping_pat,
        "lab5 handle_hypercall/run_hypercalls: a hypercall guest made for this run printed ",
        &["was kept in the guest physical address"],
    );
}

/// The reference host with print32bit printing its value as an i32.
fn print32bit_signed(
    exit: kvm_ioctls::VcpuExit<'_>,
    host: &mut lab5_hypercalls::Host<'_>,
    console: &mut dyn std::io::Write,
) -> Result<lab5_hypercalls::Flow, lab5_hypercalls::Lab5Error> {
    match exit {
        kvm_ioctls::VcpuExit::IoOut(lab5_hypercalls::PRINT32_PORT, data) if data.len() == 4 => {
            host.counts.io_out += 1;
            let value = u32::from_le_bytes(data.try_into().expect("4 bytes"));
            host.record("print32bit", &[value.into()], None);
            writeln!(console, "{}", value as i32).map_err(lab5_hypercalls::Lab5Error::Console)?;
            Ok(lab5_hypercalls::Flow::Continue)
        }
        other => lab5_hypercalls::handle_hypercall(other, host, console),
    }
}

#[test]
fn print32bit_printed_as_signed() {
    fails_on_every_seed(
        "lab5_print32bit",
        |labs| labs.handle_hypercall = print32bit_signed,
        "lab5 handle_hypercall: print32bit(",
        &["the number was printed as signed"],
    );
}

/// The reference host with num_exits answered in the IN's first 2 bytes only.
fn num_exits_in_two_bytes(
    exit: kvm_ioctls::VcpuExit<'_>,
    host: &mut lab5_hypercalls::Host<'_>,
    console: &mut dyn std::io::Write,
) -> Result<lab5_hypercalls::Flow, lab5_hypercalls::Lab5Error> {
    match exit {
        kvm_ioctls::VcpuExit::IoIn(lab5_hypercalls::NUM_EXITS_PORT, data) if data.len() == 4 => {
            host.counts.io_in += 1;
            let exits = host.counts.total() as u16;
            data[..2].copy_from_slice(&exits.to_le_bytes());
            host.record("num_exits", &[], Some(exits.into()));
            Ok(lab5_hypercalls::Flow::Continue)
        }
        other => lab5_hypercalls::handle_hypercall(other, host, console),
    }
}

#[test]
fn num_exits_answered_in_two_bytes() {
    fails_on_every_seed(
        "lab5_num_exits",
        |labs| labs.handle_hypercall = num_exits_in_two_bytes,
        "lab5 handle_hypercall: num_exits after ",
        &["only the low bytes of the answer arrived"],
    );
}

/// The reference loop with print_str reading guest physical memory on from the string's first
/// translation, as if the next virtual page were the next physical one.
fn run_reading_contiguously(
    vcpu: &mut kvm_ioctls::VcpuFd,
    host: &mut lab5_hypercalls::Host<'_>,
    console: &mut dyn std::io::Write,
    trace: &mut dyn FnMut(&kvm_ioctls::VcpuExit<'_>),
) -> Result<(), lab5_hypercalls::Lab5Error> {
    use kvm_ioctls::VcpuExit;
    use lab5_hypercalls::{Flow, Lab5Error, PRINT_STR_PORT};
    use vm_memory::Bytes;
    loop {
        let exit = vcpu.run().map_err(Lab5Error::Run)?;
        trace(&exit);
        let flow = match exit {
            VcpuExit::IoOut(PRINT_STR_PORT, data) if data.len() == 4 => {
                host.counts.io_out += 1;
                let gva = u64::from(u32::from_le_bytes(data.try_into().expect("4 bytes")));
                host.record("print_str", &[gva], None);
                let gpa = lab2_paging::translate(host.memory, host.cr3, gva)
                    .result
                    .expect("the string translates");
                let mut bytes = Vec::new();
                loop {
                    let byte: u8 = host
                        .memory
                        .read_obj(GuestAddress(gpa + bytes.len() as u64))
                        .expect("in memory");
                    if byte == 0 {
                        break;
                    }
                    bytes.push(byte);
                }
                console.write_all(&bytes).map_err(Lab5Error::Console)?;
                Flow::Continue
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console)?,
        };
        if flow == Flow::Halt {
            return Ok(());
        }
    }
}

#[test]
fn print_str_that_reads_the_next_physical_page() {
    fails_on_every_seed(
        "lab5_print_str_in_one_exit",
        |labs| labs.run_hypercalls = run_reading_contiguously,
        "lab5 handle_hypercall/run_hypercalls: a hypercall guest made for this run printed ",
        &["across a page boundary", "not adjacent"],
    );
}
