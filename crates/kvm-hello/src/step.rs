//! `kvm-hello --step`, the pure half: an instruction decoded (iced-x86) in the bitness of the
//! guest's code segment, the general registers it changed, and a step as a listing line or a JSON
//! record. The KVM half, which runs the guest one instruction at a time, is `vmm::stepper`.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, Mnemonic};
use kvm_bindings::{kvm_regs, kvm_segment};
use serde_json::{Value, json};

use crate::explain::ExitEvent;

/// The longest x86 instruction, in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 15;
/// The width of the bytes column: 12 bytes (the longest instruction of the kit's guests).
const BYTES_COLUMN: usize = 35;
/// The width of the disassembly column.
const TEXT_COLUMN: usize = 28;

/// The bitness the CPU decodes the code segment in: 64 in long mode's 64-bit segments (CS.L),
/// 32 in a 32-bit segment (CS.D), 16 otherwise (real mode).
pub fn bitness(cs: &kvm_segment) -> u32 {
    if cs.l != 0 {
        64
    } else if cs.db != 0 {
        32
    } else {
        16
    }
}

/// One instruction, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Its length in bytes (0 when no bytes could be read).
    pub len: usize,
    /// Intel syntax, as gdb's `set disassembly-flavor intel` and the books show it.
    pub text: String,
    /// HLT: the guest stops here. Under single step some hosts (PVM) give no HLT exit for it, so
    /// the stepper must know from the instruction itself.
    pub halts: bool,
}

/// Decodes the instruction at the start of `bytes`, which sits at `ip`.
pub fn decode(bytes: &[u8], bitness: u32, ip: u64) -> Instruction {
    if bytes.is_empty() {
        return Instruction {
            len: 0,
            text: "(no bytes: RIP does not map to guest memory)".into(),
            halts: false,
        };
    }
    let mut decoder = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return Instruction {
            len: bytes.len().min(1),
            text: "(bad)".into(),
            halts: false,
        };
    }
    let mut text = String::new();
    let mut formatter = IntelFormatter::new();
    formatter.options_mut().set_hex_prefix("0x");
    formatter.options_mut().set_hex_suffix("");
    formatter.options_mut().set_uppercase_hex(false);
    formatter.options_mut().set_branch_leading_zeros(false);
    formatter.options_mut().set_small_hex_numbers_in_decimal(false);
    formatter.options_mut().set_show_branch_size(false);
    formatter.options_mut().set_space_after_operand_separator(true);
    formatter.format(&instruction, &mut text);
    Instruction {
        len: instruction.len(),
        text,
        halts: instruction.mnemonic() == Mnemonic::Hlt,
    }
}

/// A general register whose value an instruction changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Its name in the mode's width: `rax`, or `eax` in 32- and 16-bit code.
    pub name: &'static str,
    /// Its value after the instruction.
    pub value: u64,
}

const NAMES_64: [&str; 17] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rflags",
];
const NAMES_32: [&str; 17] = [
    "eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "eflags",
];

fn general(regs: &kvm_regs) -> [u64; 17] {
    [
        regs.rax,
        regs.rbx,
        regs.rcx,
        regs.rdx,
        regs.rsi,
        regs.rdi,
        regs.rsp,
        regs.rbp,
        regs.r8,
        regs.r9,
        regs.r10,
        regs.r11,
        regs.r12,
        regs.r13,
        regs.r14,
        regs.r15,
        regs.rflags,
    ]
}

/// The general registers (and flags) that differ between `before` and `after`, named in the
/// width of code of `bitness` (r8-r15 exist only in 64-bit code).
pub fn changed_registers(before: &kvm_regs, after: &kvm_regs, bitness: u32) -> Vec<Change> {
    let names = if bitness == 64 { &NAMES_64 } else { &NAMES_32 };
    general(before)
        .into_iter()
        .zip(general(after))
        .zip(names)
        .filter(|((old, new), _)| old != new)
        .map(|((_, value), name)| Change { name, value })
        .collect()
}

/// Where an instruction is: RIP, and in real mode the CS:IP the student wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// RIP (IP in real mode).
    pub rip: u64,
    /// CS's selector in real mode (a segment:offset address there).
    pub real_mode_cs: Option<u16>,
}

impl Place {
    /// `0x1000`, or `0000:0010` in real mode.
    pub fn shown(&self) -> String {
        match self.real_mode_cs {
            Some(cs) => format!("{cs:04x}:{:04x}", self.rip),
            None => format!("{:#x}", self.rip),
        }
    }
}

/// One step of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1 for the first instruction.
    pub number: u64,
    /// Where the instruction was.
    pub place: Place,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its disassembly.
    pub text: String,
    /// The registers it changed.
    pub changed: Vec<Change>,
    /// The exits it caused, in order.
    pub exits: Vec<ExitEvent>,
}

/// An exit as the listing shows it: `-> io out port 0xe9 "H"`.
pub fn exit_note(event: &ExitEvent) -> String {
    match (event.kind.as_str(), event.port) {
        ("io out", Some(port)) => {
            format!("-> io out port {port:#x} {:?}", String::from_utf8_lossy(&event.data))
        }
        (kind, Some(port)) => format!("-> {kind} port {port:#x}"),
        (kind, None) => format!("-> {kind}"),
    }
}

/// The step as listing lines: the instruction, then one line per exit.
pub fn text(step: &Step) -> String {
    let bytes: Vec<String> = step.bytes.iter().map(|b| format!("{b:02x}")).collect();
    let changed: Vec<String> = step
        .changed
        .iter()
        .map(|c| format!("{}={:#x}", c.name, c.value))
        .collect();
    let mut line = format!(
        "{:>5}  {:<10} {:<BYTES_COLUMN$} {:<TEXT_COLUMN$} {}",
        step.number,
        step.place.shown(),
        bytes.join(" "),
        step.text,
        changed.join(" ")
    );
    line.truncate(line.trim_end().len());
    line.push('\n');
    for exit in &step.exits {
        line.push_str(&format!("{:>5}  {}\n", "", exit_note(exit)));
    }
    line
}

/// The step as one JSON record (`--step --json`).
pub fn json(step: &Step) -> Value {
    let changed: serde_json::Map<String, Value> = step
        .changed
        .iter()
        .map(|c| (c.name.to_owned(), Value::from(c.value)))
        .collect();
    let exits: Vec<Value> = step
        .exits
        .iter()
        .map(|e| {
            json!({
                "kind": e.kind,
                "port": e.port,
                "data": String::from_utf8_lossy(&e.data),
            })
        })
        .collect();
    json!({
        "step": step.number,
        "rip": step.place.rip,
        "cs": step.place.real_mode_cs,
        "bytes": step.bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "text": step.text,
        "changed": changed,
        "exits": exits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_decode_in_the_segments_bitness() {
        // `mov $0xe9, %dx`, as the 16-bit guest has it, then as 32-bit code reads the same bytes.
        let bytes = [0xba, 0xe9, 0x00, 0x00, 0x00];
        assert_eq!(decode(&bytes, 16, 0).text, "mov dx, 0xe9");
        assert_eq!(decode(&bytes, 16, 0).len, 3);
        assert_eq!(decode(&bytes, 32, 0).text, "mov edx, 0xe9");
        assert_eq!(decode(&bytes, 32, 0).len, 5);
        let out = decode(&[0xee], 64, 0x1000);
        assert_eq!((out.text.as_str(), out.len, out.halts), ("out dx, al", 1, false));
        assert!(decode(&[0xf4], 64, 0).halts, "hlt halts");
        assert_eq!(decode(&[0x0f, 0xff], 64, 0).text, "(bad)");
        assert_eq!(decode(&[], 64, 0).len, 0);
    }

    #[test]
    fn only_changed_registers_are_listed_in_the_modes_names() {
        let before = kvm_regs {
            rax: 1,
            rflags: 2,
            ..Default::default()
        };
        let after = kvm_regs {
            rax: 0x48,
            rflags: 2,
            r9: 7,
            ..Default::default()
        };
        assert_eq!(
            changed_registers(&before, &after, 64),
            vec![
                Change {
                    name: "rax",
                    value: 0x48
                },
                Change { name: "r9", value: 7 }
            ]
        );
        assert_eq!(changed_registers(&before, &after, 32)[0].name, "eax");
        assert!(changed_registers(&after, &after, 64).is_empty());
    }

    #[test]
    fn a_step_shows_its_place_bytes_text_changes_and_exits() {
        let step = Step {
            number: 7,
            place: Place {
                rip: 0x10,
                real_mode_cs: Some(0),
            },
            bytes: vec![0xee],
            text: "out dx, al".into(),
            changed: Vec::new(),
            exits: vec![ExitEvent {
                kind: "io out".into(),
                port: Some(0xe9),
                data: b"H".to_vec(),
                data_offset: Some(0x1000),
            }],
        };
        let text = text(&step);
        assert!(text.starts_with("    7  0000:0010  ee"), "{text}");
        assert!(text.contains("out dx, al"), "{text}");
        assert!(text.ends_with("       -> io out port 0xe9 \"H\"\n"), "{text}");
        let record = json(&step);
        assert_eq!(record["step"], 7);
        assert_eq!(record["bytes"], "ee");
        assert_eq!(record["exits"][0]["data"], "H");
    }
}
