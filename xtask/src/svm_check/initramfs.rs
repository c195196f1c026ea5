//! The SVM guest's initramfs: busybox, the KVM modules, the release binaries with their shared
//! libraries, the corpus images, and an init script that runs every case and reports on the
//! second serial port.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;
use super::cases::Case;
use super::cpio::Archive;
use super::serial;

/// Where things live inside the guest.
pub const GUEST_BIN: &str = "/bin";
pub const GUEST_MODULES: &str = "/modules";
pub const GUEST_CORPUS: &str = "/corpus";
/// The serial port the results go to (the kernel's console is ttyS0).
pub const RESULTS_TTY: &str = "/dev/ttyS1";

/// ELF program header type of the interpreter (the dynamic loader).
const PT_INTERP: u32 = 3;

/// Everything the initramfs holds.
#[derive(Debug)]
pub struct Contents {
    /// The static busybox binary.
    pub busybox: Vec<u8>,
    /// Modules in load order: file name (plain `.ko`) and contents.
    pub modules: Vec<(String, Vec<u8>)>,
    /// Binaries to put in /bin: file name and host path.
    pub binaries: Vec<(String, PathBuf)>,
    /// Shared libraries, at their host paths.
    pub libraries: Vec<PathBuf>,
    /// Corpus images: file name and bytes.
    pub corpus: Vec<(String, Vec<u8>)>,
    /// The init script.
    pub init: String,
}

/// The newc archive of `contents`.
pub fn build(contents: &Contents) -> Result<Vec<u8>, Error> {
    let mut archive = Archive::new();
    for dir in ["dev", "proc", "sys", "tmp", "bin"] {
        archive.dir(dir);
    }
    // The kernel opens /dev/console for init's stdio before init mounts devtmpfs.
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file("init", 0o755, contents.init.as_bytes());
    archive.file(&format!("{GUEST_BIN}/busybox"), 0o755, &contents.busybox);
    for (name, bytes) in &contents.modules {
        archive.file(&format!("{GUEST_MODULES}/{name}"), 0o644, bytes);
    }
    for (name, path) in &contents.binaries {
        archive.file(&format!("{GUEST_BIN}/{name}"), 0o755, &read(path)?);
    }
    for path in &contents.libraries {
        archive.file(&path.display().to_string(), 0o755, &read(path)?);
    }
    for (name, bytes) in &contents.corpus {
        archive.file(&format!("{GUEST_CORPUS}/{name}"), 0o644, bytes);
    }
    Ok(archive.finish())
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|err| Error::io(format!("reading {}", path.display()), err))
}

/// The shared libraries `ldd` lists for `binary`, the dynamic loader included.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|_| Error::Missing(vec![("ldd".to_owned(), "libc-bin")]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Io(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_ldd(&text).map_err(|lib| Error::Io(format!("{}: ldd finds no {lib}", binary.display())))
}

/// The absolute paths in `ldd`'s output; `Err(name)` for a library it did not find.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
        // "linux-vdso.so.1 (0x...)" (in the kernel, no file), "libfoo.so => not found".
        let target = line.split_once("=>").map_or(line, |(_, target)| target.trim());
        if target.starts_with("not found") {
            return Err(line.split_whitespace().next().unwrap_or(line).to_owned());
        }
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// True when the ELF file needs no dynamic loader (no PT_INTERP program header): a static
/// busybox runs in an initramfs without libraries.
pub fn is_static_elf(elf: &[u8]) -> bool {
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    // A 64-bit little-endian ELF: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).all(|i| u32_at(phoff + i * phentsize).is_some_and(|p_type| p_type != PT_INTERP))
}

/// Single-quotes `word` for sh unless it is plain.
fn sh_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The init script: mounts, loads the modules, runs every case and reports each one on
/// [`RESULTS_TTY`] in the protocol of [`serial`], then powers off.
pub fn init_script(modules: &[String], cases: &[Case]) -> String {
    let m = serial::MARK;
    let mut script = format!(
        r#"#!/bin/busybox sh
# Written by `cargo xtask svm-check`: runs the kit under KVM on (emulated) AMD-V.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
R={RESULTS_TTY}
stty -F $R raw -echo 2>/dev/null
say() {{ echo "{m}$*" > $R; }}
# Each case: its status, then stdout and stderr in hex (any bytes survive the serial line).
run_case() {{
    id=$1; shift
    "$@" </dev/null >/tmp/out 2>/tmp/err
    status=$?
    {{ echo "{m}case $id $status"; echo "{m}stdout"; xxd -p /tmp/out; echo "{m}stderr"; xxd -p /tmp/err; echo "{m}end $id"; }} > $R
}}
say begin
"#
    );
    for module in modules {
        let path = sh_quote(&format!("{GUEST_MODULES}/{module}"));
        script.push_str(&format!("insmod {path} || say insmod-failed {}\n", sh_quote(module)));
    }
    // Without /dev/kvm there is nothing to run: the kernel's words about kvm go to the console.
    script.push_str("if [ -c /dev/kvm ]; then say kvm yes; else say kvm no; dmesg | grep -i -e kvm -e svm | tail -n 5 >/dev/console; poweroff -f; fi\n");
    let corpus = Path::new(GUEST_CORPUS);
    for (id, case) in cases.iter().enumerate() {
        let program = format!("{GUEST_BIN}/{}", case.program.file_name());
        let words: Vec<String> = std::iter::once(program)
            .chain(case.args(corpus))
            .map(|w| sh_quote(&w))
            .collect();
        script.push_str(&format!("run_case {id} {}\n", words.join(" ")));
    }
    script.push_str("say done\npoweroff -f\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_files_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc6b5f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f5cf86ff000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5cf851d000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f5cf8861000)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            parse_ldd("\tlibmissing.so.3 => not found\n").unwrap_err(),
            "libmissing.so.3"
        );
    }

    #[test]
    fn a_static_elf_is_told_from_a_dynamic_one() {
        // The ELF files of this very test: the test binary is dynamic (Rust's default on Linux).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        // A minimal 64-bit ELF header with one PT_LOAD program header and no PT_INTERP.
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        elf[0x20] = 0x40;
        elf[0x36] = 0x38;
        elf[0x38] = 1;
        elf[0x40] = 1;
        assert!(is_static_elf(&elf));
        elf[0x40] = PT_INTERP as u8;
        assert!(!is_static_elf(&elf));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn the_init_script_loads_modules_in_order_and_runs_every_case() {
        let modules = ["irqbypass.ko", "kvm.ko", "ccp.ko", "kvm-amd.ko"].map(String::from);
        let cases = super::super::cases::all(guests::CORPUS);
        let script = init_script(&modules, &cases);
        assert!(script.starts_with("#!/bin/busybox sh\n"));
        let insmods: Vec<&str> = script.lines().filter(|l| l.starts_with("insmod")).collect();
        assert_eq!(
            insmods[0],
            "insmod /modules/irqbypass.ko || say insmod-failed irqbypass.ko"
        );
        assert!(insmods[3].starts_with("insmod /modules/kvm-amd.ko"));
        assert!(script.contains("run_case 2 /bin/kvm-hello --json --timeout 20 --mode paged32\n"));
        assert!(script.contains(&format!("run_case {} /bin/grader --json\n", cases.len() - 1)));
        assert!(script.contains("--guest /corpus/rep-outsb.bin\n"));
        assert!(script.trim_end().ends_with("say done\npoweroff -f"));
    }

    #[test]
    fn odd_words_are_quoted_for_sh() {
        assert_eq!(sh_quote("--mode"), "--mode");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
