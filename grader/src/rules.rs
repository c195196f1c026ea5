//! The rule each check enforces, and two graduated hints, as data: `grader --list --rules` prints
//! the rules, `grader --hint CHECK` the first hint and `grader --hint CHECK --more` the second.
//!
//! A rule is stated before it is graded: each rule's text stands word for word (white space and
//! comment markers aside) in the lab's stub comments or a chapter of the student copy's book, which
//! `tests/rules.rs` asserts. Hints nudge towards the rule; they never give the code.

/// One check's rule and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The check's name, as `grader --list` prints it.
    pub check: &'static str,
    /// What the check enforces, in the words of the stub or chapter that states it.
    pub rule: &'static str,
    /// A first nudge, then a second, more precise one.
    pub hints: [&'static str; 2],
}

/// The rule of `check`, if it has one.
pub fn rule_of(check: &str) -> Option<&'static Rule> {
    // A hidden check grades the rule of the public check it is a variant of, with other inputs.
    let public = crate::checks::hidden::VARIANT_OF
        .iter()
        .find(|(hidden, _)| *hidden == check)
        .map_or(check, |(_, public)| public);
    RULES.iter().find(|rule| rule.check == public)
}

/// Text as the rule test compares it: comment markers (`//!`, `///`, `//`) at the start of a line
/// dropped, white space collapsed to single spaces.
pub fn normalize(text: &str) -> String {
    let mut words = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let line = ["//!", "///", "//"]
            .iter()
            .find_map(|marker| line.strip_prefix(marker))
            .unwrap_or(line);
        words.extend(line.split_whitespace());
    }
    words.join(" ")
}

/// Whether `rule` stands word for word in `text` (white space and comment markers aside).
pub fn stated_in(rule: &str, text: &str) -> bool {
    normalize(text).contains(&normalize(rule))
}

/// Every check's rule and hints, in `grader --list` order.
pub const RULES: &[Rule] = &[
    // Lab 1.
    Rule {
        check: "lab1_vm_init_memory",
        rule: r#"vm_init(mem_size) allocates exactly mem_size bytes of guest memory, as one region that starts at guest physical 0."#,
        hints: [
            r#"GuestMemoryMmap::from_ranges takes a list of (start, size) ranges: how many ranges does this VM have, and where does the first one start?"#,
            r#"The size to allocate is the function's argument, not a constant; the start is GuestAddress(0), where the guest's code is loaded."#,
        ],
    },
    Rule {
        check: "lab1_memory_seen_by_vcpu",
        rule: r#"vm_init registers all of guest memory with KVM as slot GUEST_MEMORY_SLOT: guest_phys_addr 0, memory_size mem_size, flags 0 (writable), and userspace_addr the host address of that same memory."#,
        hints: [
            r#"The grader runs a probe that reads the last bytes of guest memory and writes one: which of the region's five fields decide whether the vCPU finds them, and may write them?"#,
            r#"userspace_addr is where the memory you allocated is mapped in this process (GuestMemoryBackend::get_host_address of guest address 0, a trait you import); KVM_MEM_READONLY in flags makes writes exit."#,
        ],
    },
    Rule {
        check: "lab1_vcpu_init",
        rule: r#"vcpu_init creates vCPU VCPU_ID and records in run_size the size KVM_GET_VCPU_MMAP_SIZE reports."#,
        hints: [
            r#"The size of the kvm_run mapping is a property of the KVM instance, asked with one ioctl; kvm-ioctls wraps it on the VM's fd."#,
            r#"Look for run_size among VmFd's methods; the vCPU itself comes from create_vcpu with VCPU_ID."#,
        ],
    },
    Rule {
        check: "lab1_kvm_run_mapping",
        rule: r#"kvm_run_mapping returns the host virtual address of the vCPU's kvm_run structure (VcpuFd::get_kvm_run) and the size KVM_GET_VCPU_MMAP_SIZE reports."#,
        hints: [
            r#"kvm-ioctls mapped kvm_run inside create_vcpu; it hands you a reference to it. An address is that reference turned into a number."#,
            r#"A reference casts to a raw pointer, and a raw pointer to u64; the size is the one vcpu_init recorded."#,
        ],
    },
    Rule {
        check: "lab1_guest_memory_host_address",
        rule: r#"guest_memory_host_address returns the host virtual address at which guest physical 0 is mapped in this process."#,
        hints: [
            r#"vm-memory can tell you where a guest address lives in this process: find the method on the memory's backend trait."#,
            r#"GuestMemoryBackend::get_host_address(GuestAddress(0)) returns a pointer (import the trait; vm-memory 0.18 renamed it)."#,
        ],
    },
    Rule {
        check: "lab1_load_image",
        rule: r#"load_image copies the whole image to guest physical 0; an image of up to MAX_IMAGE_SIZE bytes is loaded, and a longer one is refused with Lab1Error::ImageTooLarge { len }."#,
        hints: [
            r#"Two cases: an image that fits below the page tables at 0x2000, and one that does not. Which comparison separates them, and what is the largest size that fits?"#,
            r#"Exactly MAX_IMAGE_SIZE bytes still fits; refuse before writing anything, then write the whole slice with Bytes::write_slice at GUEST_LOAD_ADDR."#,
        ],
    },
    // Lab 2.
    Rule {
        check: "lab2_long_mode_cr3",
        rule: r#"setup_long_mode_page_tables returns the value for CR3: the PML4's guest physical address, PML4_ADDR."#,
        hints: [
            r#"CR3 names the top-level table: which of the three tables is that in long mode?"#,
            r#"Return the PML4's address, not the PD's and not an entry's value."#,
        ],
    },
    Rule {
        check: "lab2_pml4_entry",
        rule: r#"PML4[0] holds PDPT_ADDR with Present, RW and User set."#,
        hints: [
            r#"An entry that points to the next table holds that table's address and its flag bits, in one u64."#,
            r#"Combine the PDPT's address with PTE_PRESENT, PTE_RW and PTE_USER, and write it at entry 0 of the PML4."#,
        ],
    },
    Rule {
        check: "lab2_pdpt_entry",
        rule: r#"PDPT[0] holds PD_ADDR with Present, RW and User set."#,
        hints: [
            r#"Same shape as the PML4 entry, one level down."#,
            r#"Entry 0 of the PDPT points at the PD: no PS here, or it would map a 1 GiB page."#,
        ],
    },
    Rule {
        check: "lab2_pd_entry",
        rule: r#"PD[0] maps one 2 MiB page at guest physical 0: address 0 with Present, RW, User and PS set."#,
        hints: [
            r#"The last level of this map does not point to a page table: it maps a page itself. Which bit says so?"#,
            r#"PS (bit 7) in a PD entry makes it map a 2 MiB page; the page's address is 0."#,
        ],
    },
    Rule {
        check: "lab2_nothing_else_mapped",
        rule: r#"Every other entry of the three long-mode tables is zero, and setup_long_mode_page_tables writes no other byte of guest memory."#,
        hints: [
            r#"Memory starts zeroed: write only what the map needs."#,
            r#"Three 8-byte writes, at the first entry of each table; an entry written at a wrong index, or with 4-byte writes, shows up here."#,
        ],
    },
    Rule {
        check: "lab2_paged32_directory",
        rule: r#"setup_paged32_page_directory returns PD32_ADDR and writes PD32[0] as a 4-byte entry that maps one 4 MiB page at guest physical 0 (Present, RW, User, PS); the other 1023 entries stay zero."#,
        hints: [
            r#"32-bit paging has 4-byte entries; with CR4.PSE a directory entry can map a 4 MiB page itself."#,
            r#"Write a u32, not a u64, at PD32_ADDR: the flags of the long-mode PD entry fit in it."#,
        ],
    },
    Rule {
        check: "lab2_translate_identity",
        rule: r#"translate walks PML4, PDPT and PD from CR3, records one WalkStep per entry it reads (level, index, entry address, entry), and answers the guest physical address."#,
        hints: [
            r#"At each level the index is 9 bits of the address at level.shift(); the entry sits at the table's address plus index times 8."#,
            r#"With the PS entry at the PD the walk ends: keep the page's address from the entry and the low 21 bits from the virtual address."#,
        ],
    },
    Rule {
        check: "lab2_translate_faults",
        rule: r#"translate answers WalkFault::NonCanonical, reading no table, when bits 63..48 of the address are not copies of bit 47, and WalkFault::NotPresent(level) at the first entry whose Present bit is clear, after recording that entry's step."#,
        hints: [
            r#"Two ways to stop: before any table is read, and at an entry that is not present. Which one still records a step?"#,
            r#"Canonical means the address sign-extends from bit 47; a clear P bit ends the walk at its level, with that entry in the steps."#,
        ],
    },
    Rule {
        check: "lab2_translate_other_pages",
        rule: r#"translate takes the PML4's address from CR3's bits 12..51 (CR3's low bits are flags) and each next address from an entry's bits 12..51 (ENTRY_ADDR_MASK: flags and NX masked off); PS maps a page only in a PDPT entry (1 GiB) or a PD entry (2 MiB): bit 7 of a PML4 entry does not end the walk, and in a PT entry it is PAT; a 1 GiB or 2 MiB page's address is the entry's bits 30..51 or 21..51 (its bit 12 is PAT, not an address bit); a table outside guest memory is WalkFault::TableOutsideMemory with the level and the entry's address."#,
        hints: [
            r#"Random tables have flag bits (RW, US, PWT, PCD, A, D, NX, the ignored bits 9..11 and 52..62, PAT in large pages) set everywhere: an address taken from an entry, or from CR3, must keep only its address bits."#,
            r#"Mask with ENTRY_ADDR_MASK at every level, CR3 included; ask about PS only at the PDPT and PD levels, and a PT entry always maps a 4 KiB page."#,
        ],
    },
    // Lab 3.
    Rule {
        check: "lab3_flat_segment",
        rule: r#"flat_segment(mode, code) is a present, ring-0, flat 4 GiB segment: base 0, limit FLAT_LIMIT, g 1, s 1, dpl 0; the code segment has SEG_TYPE_CODE and CODE_SELECTOR and is 64-bit in long mode (l 1, db 0), 32-bit otherwise (l 0, db 1); the data segment has SEG_TYPE_DATA, DATA_SELECTOR, db 1 and l 0; every other field is 0. Mode::Real is never asked for and not graded: answer as for Mode::Protected."#,
        hints: [
            r#"The Lab 3 chapter's segment table has one row per field: start from `kvm_segment { .. Default::default() }` and set each one it names."#,
            r#"Only the code segment in long mode differs (L set, D clear); L = 1 with D = 1 is reserved and fails VM entry."#,
        ],
    },
    Rule {
        check: "lab3_long_mode_control_registers",
        rule: r#"In long mode special_registers sets CR0 = PE|MP|ET|NE|WP|AM|PG, CR3 = the cr3 it is given, CR4 = PAE and EFER = LME|LMA."#,
        hints: [
            r#"Long mode needs paging with 64-bit entries and both long-mode bits of EFER: the CPU would set LMA itself, KVM_SET_SREGS does not."#,
            r#"Assign CR0, CR4 and EFER whole (the reset state's cache bits go), and take CR3 from the argument."#,
        ],
    },
    Rule {
        check: "lab3_long_mode_code_segment",
        rule: r#"In long mode CS is flat_segment(Mode::Long, true): a 64-bit code segment (l 1, db 0)."#,
        hints: [
            r#"CS.L = 0 in long mode is legal but runs compatibility-mode (32-bit) code."#,
            r#"Set CS from your flat_segment for long mode's code segment."#,
        ],
    },
    Rule {
        check: "lab3_data_segments",
        rule: r#"In protected, paged32 and long mode, DS, ES, FS, GS and SS each hold flat_segment(mode, false)."#,
        hints: [
            r#"Five data segment registers, one value: the flat data segment."#,
            r#"SS counts too; and in long mode the data segments keep db 1, l 0."#,
        ],
    },
    Rule {
        check: "lab3_protected_mode",
        rule: r#"In protected mode special_registers sets CR0.PE, keeps every other CR0 bit of the reset state, leaves CR3, CR4 and EFER as they were, and loads 32-bit flat segments (CS.l 0, CS.db 1)."#,
        hints: [
            r#"Protected mode without paging changes one bit of CR0 and the segments; paging's registers stay as reset."#,
            r#"OR CR0_PE into the reset CR0 (do not assign it whole), and do not touch CR3, CR4 or EFER."#,
        ],
    },
    Rule {
        check: "lab3_paged32_mode",
        rule: r#"In paged32 mode special_registers sets CR0 = PE|MP|ET|NE|WP|AM|PG, CR3 = the cr3 it is given, CR4 = PSE (not PAE), EFER = 0, and 32-bit flat segments."#,
        hints: [
            r#"32-bit paging with 4 MiB pages: which CR4 bit allows large pages with 4-byte entries, and which one must stay clear?"#,
            r#"PAE would make the CPU read 8-byte entries; EFER is cleared, since paged32 is not long mode."#,
        ],
    },
    Rule {
        check: "lab3_real_mode",
        rule: r#"In real mode special_registers sets CS.selector and CS.base to 0 and changes nothing else of the reset state."#,
        hints: [
            r#"After reset the CPU fetches from CS.base 0xffff0000 + IP; the kit's image is at 0."#,
            r#"Two fields of CS, nothing more: no CR0 bit, no other segment."#,
        ],
    },
    Rule {
        check: "lab3_general_registers",
        rule: r#"general_registers sets RIP = ENTRY_POINT, RFLAGS = RFLAGS_RESERVED, RSP = mem_size in protected, paged32 and long mode and 0 in real mode, and every other register to 0."#,
        hints: [
            r#"Start from an all-zero kvm_regs; three registers differ, and one of them depends on the mode."#,
            r#"The stack grows down from the top of guest memory; in real mode SS = 0 reaches only 64 KiB, and SP = 0 wraps to 0xfffe on the first push."#,
        ],
    },
    Rule {
        check: "lab3_guest_runs_in_each_mode",
        rule: r#"With the registers special_registers and general_registers give for a mode, a guest loaded at 0 runs from RIP 0 in that mode: its code executes with the operand size of that mode, its pushes land just below mem_size, and its stores reach guest physical memory through segments based at 0 (and, in long mode, through the page tables at the CR3 it was given)."#,
        hints: [
            r#"Run your own build: `cargo run -p kvm-hello -- --mode protected` (and real, long) runs the kit's guest with your registers."#,
            r#"A guest that prints garbage or the wrong number ran with the wrong operand size (CS.L, CS.DB); one that faults on its first push has RSP or SS wrong; one whose store lands elsewhere has a data segment not based at 0."#,
        ],
    },
    Rule {
        check: "lab3_guest_runs_in_paged32",
        rule: r#"The same holds in paged32 mode, through a 32-bit page directory at the CR3 it was given whose large entries map 4 MiB pages (which needs CR4.PSE)."#,
        hints: [
            r#"Without CR4.PSE, the PS bit of a 32-bit page-directory entry is ignored and the entry points to a page table."#,
            r#"Paged32 needs CR0.PG and CR0.PE, CR4.PSE for the 4 MiB page, and EFER without LME; it runs on VMX and SVM hosts (PVM refuses 32-bit paging)."#,
        ],
    },
    // Lab 4.
    Rule {
        check: "lab4_console_output",
        rule: r#"handle_exit writes every byte of an OUT to CONSOLE_PORT (the whole data slice: size x count bytes) to console once, counts the exit once in counts.io_out, and answers Flow::Continue."#,
        hints: [
            r#"VcpuExit::IoOut gives the port and a slice of data: how many bytes can that slice hold?"#,
            r#"Write the whole slice, not its first byte; one exit is one count, whatever its size."#,
        ],
    },
    Rule {
        check: "lab4_hlt_ends_the_loop",
        rule: r#"handle_exit counts a HLT in counts.hlt and answers Flow::Halt."#,
        hints: [
            r#"HLT is an exit like the others: count it before you leave."#,
            r#"VcpuExit::Hlt: add one to counts.hlt, then return Ok(Flow::Halt)."#,
        ],
    },
    Rule {
        check: "lab4_unexpected_exits",
        rule: r#"handle_exit counts every other exit under its reason (an OUT to another port in io_out, an IN in io_in, MMIO in mmio, a triple fault in shutdown, the rest in other), prints nothing of it, and returns ExitLoopError::Unexpected(UnexpectedExit::from_exit(&exit))."#,
        hints: [
            r#"An exit you refuse is still an exit: the counts report every return from KVM_RUN."#,
            r#"Count first, by the exit's kind (an OUT to a port other than 0xE9 is still io_out), then build the error with UnexpectedExit::from_exit; only port 0xE9 is the console."#,
        ],
    },
    Rule {
        check: "lab4_result_slot",
        rule: r#"read_result_slot reads exactly width bytes (2, 4 or 8) at RESULT_ADDR, little-endian, and returns them zero-extended to a u64."#,
        hints: [
            r#"The guest's word size depends on its mode: reading 8 bytes after a 16-bit guest picks up whatever lies past its result."#,
            r#"Read width bytes into the start of an 8-byte little-endian buffer (read_slice), then convert with u64::from_le_bytes."#,
        ],
    },
    Rule {
        check: "lab4_check_results",
        rule: r#"check_results returns ResultError::Rax(rax) when RAX is not EXPECTED_RESULT, else ResultError::Memory(memory_value) when the memory value is not, else Ok(()): RAX is checked first."#,
        hints: [
            r#"kvm-hello-world makes two checks, in a fixed order."#,
            r#"Compare RAX first and return its error even when the memory is wrong too."#,
        ],
    },
    Rule {
        check: "lab4_hello_long_mode",
        rule: r#"With labs 1 to 3, run_until_halt runs the long-mode hello guest to its HLT in exactly 15 exits (14 OUTs and the HLT), printing "Hello, world!" and a newline, with 42 in RAX and at 0x400; a guest the grader makes for the run is served the same way."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --trace`: every exit is listed; compare with the 15 the chapter shows."#,
            r#"Loop on vcpu.run() and hand each exit to handle_exit until it answers Flow::Halt; a second KVM_RUN per exit, or a print in the loop as well as in handle_exit, shows up in the count or the output."#,
        ],
    },
    Rule {
        check: "lab4_hello_real_mode",
        rule: r#"With labs 1 to 3, run_until_halt runs the real-mode hello guest to its HLT in exactly 15 exits, printing "Hello, world!" and a newline, with 42 in RAX and at 0x400 (2 bytes wide); a guest the grader makes for the run is served the same way."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --mode real --trace`: which step differs from long mode?"#,
            r#"Real mode needs lab 3's real-mode registers (CS at 0, RSP 0) and a 2-byte result read."#,
        ],
    },
    Rule {
        check: "lab4_string_io",
        rule: r#"A rep outsb, a 4-byte OUT and a 2-byte OUT to the console print all their bytes, in order."#,
        hints: [
            r#"An OUT exit's data slice is size x count bytes long: a 4-byte OUT brings four characters."#,
            r#"Print the whole slice of every console OUT; do not assume one byte per exit."#,
        ],
    },
    Rule {
        check: "lab4_stops_at_hlt",
        rule: r#"run_until_halt returns at the first HLT: nothing the guest would do after it runs."#,
        hints: [
            r#"The loop's only normal end is the first Flow::Halt."#,
            r#"Leave the loop as soon as handle_exit answers Flow::Halt; do not enter the guest again."#,
        ],
    },
    Rule {
        check: "lab4_unexpected_exit_ends_the_run",
        rule: r#"An OUT to a port other than 0xE9 is counted in io_out and ends the run with ExitLoopError::Unexpected naming its port; the run does not go on as if the guest had halted."#,
        hints: [
            r#"An error from handle_exit must leave run_until_halt as an error, not as a halt."#,
            r#"Propagate handle_exit's Err with `?`; count the refused OUT in io_out before you refuse it."#,
        ],
    },
    Rule {
        check: "lab4_wrong_results_are_caught",
        rule: r#"A guest that halts with a wrong RAX, a wrong value at 0x400, or its result written at another width than its mode's fails the result checks, with the wrong value in the message."#,
        hints: [
            r#"read_result_slot and check_results decide together: a slot read at the wrong width can make a wrong result look right."#,
            r#"Read the slot at the width kvm-hello passes (the mode's word size), and compare both values with 42."#,
        ],
    },
    Rule {
        check: "lab4_trace_every_exit",
        rule: r#"run_until_halt calls trace(&exit) exactly once for every exit, before handling it."#,
        hints: [
            r#"--trace and --explain see exits only through the trace callback."#,
            r#"Call trace right after vcpu.run() returns an exit, then pass the exit to handle_exit."#,
        ],
    },
    Rule {
        check: "lab4_kvm_run_errors",
        rule: r#"run_until_halt returns a failed KVM_RUN at once as ExitLoopError::Run(the ioctl's error), without retrying it (EINTR included)."#,
        hints: [
            r#"kvm-hello's watchdog stops a vCPU by making KVM_RUN fail with EINTR: a loop that retries never stops."#,
            r#"Map vcpu.run()'s Err to ExitLoopError::Run and return it; never loop on an error."#,
        ],
    },
    // End to end.
    Rule {
        check: "e2e_long_mode",
        rule: r#"`kvm-hello --mode long` ends with status 0, prints exactly "Hello, world!" and a newline on stdout, and its summary line reads "guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42"."#,
        hints: [
            r#"Run it yourself: `cargo run -p kvm-hello -- --mode long`. The first failing lab check says more than this one."#,
            r#"When labs 1 to 4 pass and this fails, compare your stdout with the greeting byte for byte (an extra newline or a doubled print)."#,
        ],
    },
    Rule {
        check: "e2e_protected_mode",
        rule: r#"`kvm-hello --mode protected` ends with status 0, prints exactly "Hello, world!" and a newline, and reports 15 exits (io 14, hlt 1) and the two 42s."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --mode protected --trace` and compare with long mode."#,
            r#"Protected mode uses lab 3's protected-mode registers and a 4-byte result read."#,
        ],
    },
    Rule {
        check: "e2e_real_mode",
        rule: r#"`kvm-hello --mode real` ends with status 0, prints exactly "Hello, world!" and a newline, and reports 15 exits (io 14, hlt 1) and the two 42s."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --mode real --trace`."#,
            r#"Real mode uses lab 3's real-mode registers (CS at 0, RSP 0) and a 2-byte result read."#,
        ],
    },
    Rule {
        check: "e2e_paged32_mode",
        rule: r#"`kvm-hello --mode paged32` ends with status 0, prints exactly "Hello, world!" and a newline, and reports 15 exits (io 14, hlt 1) and the two 42s; on a host that refuses 32-bit paging (PVM) this check is not run."#,
        hints: [
            r#"paged32 uses lab 2's 32-bit page directory and lab 3's paged32 registers."#,
            r#"On PVM the vCPU shuts down at once whatever you do: run it on a VMX or SVM host, or `cargo xtask svm-check`."#,
        ],
    },
    Rule {
        check: "e2e_json_report",
        rule: r#"`kvm-hello --json` ends with status 0 and prints one JSON object that agrees with the run: mode "long", the greeting as output, 15 exits (io 14, hlt 1), rax and memory_0x400 42, ok true and status 0."#,
        hints: [
            r#"The report is built from what your labs return: `cargo run -p kvm-hello -- --json` and read it against the run."#,
            r#"A wrong field here usually comes from lab 1's addresses or lab 4's counts: their own checks say which."#,
        ],
    },
    // Lab 0.
    Rule {
        check: "lab0_create_vm",
        rule: r#"create_vm gives the VM one region of guest memory, PAGE_SIZE bytes at guest physical CODE_ADDR, holding CODE at its start."#,
        hints: [
            r#"The LWN VM has one page of memory, not at 0: where does its code start?"#,
            r#"One range (GuestAddress(CODE_ADDR), PAGE_SIZE) for from_ranges, then write CODE at CODE_ADDR with Bytes::write_slice."#,
        ],
    },
    Rule {
        check: "lab0_setup_vcpu",
        rule: r#"setup_vcpu leaves CS.base and CS.selector 0, RIP = CODE_ADDR, RAX = 2, RBX = 2 and RFLAGS = 0x2."#,
        hints: [
            r#"Read the special registers, change CS, write them back; then the same with the general registers."#,
            r#"Real mode fetches from CS.base + RIP: with CS.base 0, RIP is the code's guest physical address."#,
        ],
    },
    Rule {
        check: "lab0_memory_slot",
        rule: r#"create_vm registers its page with KVM as slot 0 at guest physical CODE_ADDR, memory_size PAGE_SIZE, flags 0 (writable), and userspace_addr the host address of that same page."#,
        hints: [
            r#"kvm_userspace_memory_region has five fields: slot, flags, guest_phys_addr, memory_size, userspace_addr."#,
            r#"userspace_addr is GuestMemoryBackend::get_host_address of CODE_ADDR in the memory you return (import the trait)."#,
        ],
    },
    Rule {
        check: "lab0_run",
        rule: r#"run gives every exit to trace, counts it once under its reason in counts, writes each OUT to SERIAL_PORT to console and returns at the first HLT: the LWN code prints "4" and a newline in 3 exits; code the grader makes for the run is served the same way."#,
        hints: [
            r#"It is lab 4's loop for another port: KVM_RUN, trace, count, serve, until HLT."#,
            r#"ExitCounts has io_out, io_in, hlt, mmio, shutdown and other; an exit you do not serve becomes Lab0Error::Unexpected."#,
        ],
    },
    Rule {
        check: "e2e_lab_lwn",
        rule: r#"`kvm-hello --lab lwn --guest IMAGE` runs IMAGE in the VM your create_vm made, from 0x1000: it ends with status 0, its --json report's output is exactly what the guest wrote to the serial port, and it counts one io exit per OUT and one hlt."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --lab lwn --json`: the article's code prints "4" in 3 exits (io 2, hlt 1)."#,
            r#"When lab 0's other checks pass, compare the exit counts: every exit counted once."#,
        ],
    },
    // Lab 5.
    Rule {
        check: "lab5_print32bit",
        rule: r#"print32bit: an OUT of 4 bytes to PRINT32_PORT prints its value (the 4 data bytes, little-endian) in decimal and a newline, is counted in io_out, is recorded as ("print32bit", [value], None), and answers Flow::Continue."#,
        hints: [
            r#"The value travels in the OUT's own data bytes; it is unsigned."#,
            r#"u32::from_le_bytes of the 4 bytes, printed with {} and a newline; then host.record."#,
        ],
    },
    Rule {
        check: "lab5_num_exits",
        rule: r#"num_exits: an IN of 4 bytes from NUM_EXITS_PORT is counted first, then answered with the number of exits so far, this one included (a u32, little-endian, in the IN's data), and recorded with that number as its result. An exit that is no hypercall (MMIO, a triple fault, any other reason) is counted under its reason (mmio, shutdown, the rest in other), then is Lab5Error::Unexpected."#,
        hints: [
            r#"The guest calls num_exits twice around one print_str and expects answers 2 apart."#,
            r#"Count the exit before you answer: the answer is counts.total() after counting; fill data with its little-endian bytes."#,
        ],
    },
    Rule {
        check: "lab5_write_exit_report",
        rule: r#"write_exit_report writes "IO in: X\nIO out: Y\n" and a NUL at REPORT_ADDR (X = counts.io_in, Y = counts.io_out, in decimal) and returns REPORT_ADDR."#,
        hints: [
            r#"print_str will read this text back from guest memory: it needs its terminator."#,
            r#"format! the two lines, add '\0', write_slice at REPORT_ADDR, return that address."#,
        ],
    },
    Rule {
        check: "lab5_read_guest_string",
        rule: r#"read_guest_string translates the string's address through the guest's page tables page by page (a string may cross a 4 KiB page boundary onto a page mapped anywhere), reads up to the NUL and returns the bytes without it; a string of up to MAX_STRING bytes before its NUL is read whole, a longer one is Lab5Error::BadAddress, and so is an address that does not translate."#,
        hints: [
            r#"A guest virtual address is not a guest physical one: walk the tables (your lab 2 translate), and walk again at each new page."#,
            r#"Read at most to the end of the current page, then translate the next page's address; stop with an error once MAX_STRING bytes passed with no NUL (exactly MAX_STRING bytes, then the NUL, is fine)."#,
        ],
    },
    Rule {
        check: "lab5_gva_to_hva",
        rule: r#"gva_to_hva translates gva with the lab 2 walk and answers host_base plus the guest physical address, or None when the walk faults."#,
        hints: [
            r#"Two translations: guest virtual to guest physical (the page tables), guest physical to host virtual (where guest memory is mapped)."#,
            r#"translate(memory, cr3, gva).result, then add host_base to the guest physical address."#,
        ],
    },
    Rule {
        check: "lab5_gva_to_hva_hypercall",
        rule: r#"gva_to_hva hypercall: the OUT's 4-byte value is the guest virtual address of an 8-byte slot; the host reads the GVA from the slot, writes gva_to_hva of it back into the slot (8 bytes, little-endian), or, when there is none, prints "Invalid GVA" and a newline and writes 0; it records ("gva_to_hva", [the GVA read], Some(the value written))."#,
        hints: [
            r#"The OUT carries where the address is, not the address: two translations of two different addresses."#,
            r#"Translate the slot's address to read its u64, call gva_to_hva on that value, write the answer (or 0) back into the slot as a u64."#,
        ],
    },
    Rule {
        check: "lab5_gva_to_hva_outside_memory",
        rule: r#"gva_to_hva answers None when the address translates to a guest physical address outside guest memory (at or past its end): only an address inside the VM's memory has a host address."#,
        hints: [
            r#"A page table entry can map any guest physical address, also one past the 2 MiB the VM has."#,
            r#"After the walk, check that the guest physical address lies inside guest memory (GuestMemory::address_in_range) before adding host_base."#,
        ],
    },
    Rule {
        check: "lab5_hypercall_guest",
        rule: r#"run_hypercalls runs the kit's hypercall guest, and one the grader makes for the run, to its HLT, printing exactly what the port table says each call prints."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --lab hypercalls --trace` and compare with the chapter's expected output."#,
            r#"The failure names the first line that differs: find the hypercall that prints it in the port table."#,
        ],
    },
    Rule {
        check: "lab5_print_str_in_one_exit",
        rule: r#"print_str prints its whole string in the one exit of its OUT: the hypercall guest makes 44 exits in all (one per hypercall, and the HLT)."#,
        hints: [
            r#"The point of print_str is that the host reads the string from guest memory: the guest sends only its address."#,
            r#"One OUT of 4 bytes to PRINT_STR_PORT: read_guest_string, write it all, record, continue."#,
        ],
    },
    Rule {
        check: "lab5_gva_to_hva_live",
        rule: r#"In the running hypercall guest, gva_to_hva(0x400) answers memory_host_base + 0x400, and an address that does not translate answers 0 and prints "Invalid GVA"."#,
        hints: [
            r#"host_base is the host address of guest physical 0, the value lab 1's guest_memory_host_address returns."#,
            r#"If lab5_gva_to_hva passes and this fails, look at how the slot is read and written in handle_hypercall."#,
        ],
    },
    Rule {
        check: "e2e_lab_hypercalls",
        rule: r#"`kvm-hello --lab hypercalls --json` ends with status 0, and its report's first gva_to_hva record has gva 0x400 and hva memory_host_base + 0x400."#,
        hints: [
            r#"Run `cargo run -p kvm-hello -- --lab hypercalls --json` and read the hypercalls list."#,
            r#"The record comes from host.record: record the GVA read from the slot and the HVA written back."#,
        ],
    },
    // Lab 6.
    Rule {
        check: "lab6_next_slice_turns",
        rule: r#"next_slice: with Cooperative and RoundRobin the next slice goes to the VM that did not run last, and to VM 0 when none has run yet (last = None); cooperative slices have no length (None), round-robin slices last one quantum, whatever the guest times."#,
        hints: [
            r#"Three cases of last: None, Some(0), Some(1)."#,
            r#"The other VM of Some(i) is 1 - i; None starts with VM 0. Only the policy decides the length."#,
        ],
    },
    Rule {
        check: "lab6_next_slice_weighted",
        rule: r#"next_slice with Weighted gives one quantum to VM 0 when guest_time[0] / shares[0] <= guest_time[1] / shares[1], else to VM 1 (compare the cross products, no division; a tie goes to VM 0)."#,
        hints: [
            r#"The VM that got least guest time for its share runs next."#,
            r#"Compare guest_time[0] * shares[1] with guest_time[1] * shares[0] (in nanoseconds, as u128)."#,
        ],
    },
    Rule {
        check: "lab6_both_progress",
        rule: r#"Under every policy both VMs run slices, gain guest time and progress: each slice adds the CPU time of its KVM_RUN calls to its VM's guest time (every slice: one ended by its console exit, one the timer interrupted after exits or without any; never more than the thread's CPU time in it), counts its exits (by reason, also an exit the worker never causes, which ends run_schedule with its error) and itself in the VM's account, and reads the VM's progress at its end."#,
        hints: [
            r#"The account is the scheduler's only view of a VM: what must a slice update there?"#,
            r#"thread_cpu_time before and after each KVM_RUN; read_progress at the slice's end; count the slice."#,
        ],
    },
    Rule {
        check: "lab6_cooperative_alternates",
        rule: r#"Cooperative: each slice runs until its VM's first console exit, then the other VM runs: the VMs alternate at every console exit."#,
        hints: [
            r#"A slice with no length has no timer: what ends it?"#,
            r#"With length None, return from run_slice right after the first console OUT is served."#,
        ],
    },
    Rule {
        check: "lab6_round_robin_quantum",
        rule: r#"RoundRobin: run_slice arms the slice timer with the quantum before its first KVM_RUN and ends the slice only at the timer's EINTR, so each slice lasts one quantum of the thread's CPU time (never more than 1 ms short of it; the median at most 12 ms over it), and disarms the timer after. The CPU time of every KVM_RUN is guest time, also that of the one the timer interrupted: in a slice without an exit it is all the guest time there is."#,
        hints: [
            r#"The timer counts this thread's CPU time; KVM_RUN returns EINTR when it fires, and that is the end of the slice, not an error."#,
            r#"Arm before the loop, keep calling KVM_RUN through console exits, stop at EINTR, disarm on every path out."#,
        ],
    },
    Rule {
        check: "lab6_weighted_shares",
        rule: r#"Weighted, with shares drawn for each run: each VM's share of the guest time in the accounts is within 4 points of its request; the guests confirm the accounts: no slice adds more guest time than the thread's CPU time in it, and the two guests' best work per ms of the guest time their accounts got in a slice is within a factor of 1.5."#,
        hints: [
            r#"The shares come out right only when next_slice and the guest-time accounting are both right."#,
            r#"If lab6_next_slice_weighted passes, look at the guest time each slice adds: only time inside KVM_RUN counts."#,
        ],
    },
    Rule {
        check: "lab6_state_survives_switches",
        rule: r#"A VM goes on where it stopped: its progress only grows from one of its slices to the next, and every line its guest prints appears once, whole, in order, with its VM's prefix (a half-written line waits in the VM's own buffer across switches)."#,
        hints: [
            r#"Each VM has its own vCPU and its own line buffer; a switch must lose neither."#,
            r#"Never set a VM's registers again after create_guest_vm; write a line to console only at its newline, after line_prefix(vm.name)."#,
        ],
    },
    Rule {
        check: "lab6_ends_at_duration",
        rule: r#"run_schedule loops while the two VMs' guest time together is below the duration and stops at once when it reaches it."#,
        hints: [
            r#"The duration is guest time, not wall-clock time."#,
            r#"Check the sum of both accounts' guest_time before each slice, and leave as soon as it is at least the duration."#,
        ],
    },
    // Lab 7.
    Rule {
        check: "lab7_snapshot_round_trip",
        rule: r#"restore_snapshot gives a new VM whose vCPU, as save_vcpu reads it, equals the snapshot's bit for bit (general registers, special registers, FPU), with all of the snapshot's memory: the restored guest ends with the checksum of an unmoved run."#,
        hints: [
            r#"What does a vCPU need to resume elsewhere, and in which order must the parts go in?"#,
            r#"KVM_SET_SREGS first (it sets the mode the general registers are read in), then KVM_SET_REGS, then KVM_SET_FPU; the memory is one write of the snapshot's bytes at guest physical 0."#,
        ],
    },
    Rule {
        check: "lab7_dirty_log",
        rule: r#"take_dirty_pages returns, in increasing order, the number of every page the guest wrote since the last call; on a slot registered without KVM_MEM_LOG_DIRTY_PAGES it returns KVM's error."#,
        hints: [
            r#"Which pages did the guest change during the slice, and are they all in your list?"#,
            r#"get_dirty_log gives one u64 per 64 pages: bit i of word w is page 64 * w + i; its error (ENOENT without the flag) must reach the caller."#,
        ],
    },
    Rule {
        check: "lab7_move_fast_writer",
        rule: r#"A moved guest prints exactly the lines and the checksum of an unmoved run, even when it writes faster than the rounds can send: the stop-and-copy round sends the pages of one last dirty log read after the guest stopped."#,
        hints: [
            r#"The guest wrote pages during the last slice before the stop: where do they go?"#,
            r#"After the last pre-copy slice, read the log once more (the guest no longer runs) and send those pages before the vCPU's state and Resume."#,
        ],
    },
    Rule {
        check: "lab7_rounds_converge",
        rule: r#"Round 1 sends all 512 pages; each later round sends the dirty set the log gave after the one before; pre-copy stops when that set has at most plan.stop_pages pages or after plan.max_rounds rounds, and the stop-and-copy round sends the last dirty set."#,
        hints: [
            r#"How many pages does the log report right after it was turned on, and why must round 1 send them all anyway?"#,
            r#"Keep the log's answer after each slice as the next round's pages; compare its size with plan.stop_pages before the next round."#,
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_wrapped_in_comments_is_found() {
        let stub = "// TODO(lab9): a rule that\n    // spans   two lines.\n/// More.\n";
        assert!(stated_in("a rule that spans two lines.", stub));
    }

    #[test]
    fn a_removed_or_changed_rule_is_not_found() {
        let stub = "//! Graded: the slot is 8 bytes,\n//! little-endian.\n";
        assert!(stated_in("the slot is 8 bytes, little-endian.", stub));
        assert!(!stated_in("the slot is 8 bytes, big-endian.", stub));
        assert!(!stated_in("the slot is 8 bytes, little-endian.", "//! Graded:\n"));
    }

    #[test]
    fn rule_of_finds_a_check_by_name() {
        assert_eq!(rule_of("lab2_pd_entry").map(|r| r.check), Some("lab2_pd_entry"));
        assert!(rule_of("lab2_no_such_check").is_none());
    }
}
