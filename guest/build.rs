//! Builds every guest image from source with the tools a student already has: the installed
//! rustc (host target only, `#![no_std]`), GNU as, ld, gcc and objcopy. No binary is committed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One guest: how to turn its source into a linked ELF file.
struct Guest {
    /// Image name: `$OUT_DIR/<name>.bin`.
    name: &'static str,
    /// Source files, relative to the crate (rebuilt when one changes).
    sources: &'static [&'static str],
    /// The linker script.
    script: &'static str,
    /// ld's emulation: elf_x86_64 or elf_i386.
    emulation: &'static str,
    /// How the object file is made.
    compile: fn(&Path, &Path) -> Command,
}

const GUESTS: &[Guest] = &[
    Guest {
        name: "hello64",
        sources: &["hello64/hello.rs"],
        script: "hello64/link.ld",
        emulation: "elf_x86_64",
        compile: rust_object,
    },
    Guest {
        name: "hypercalls64",
        sources: &["hypercalls/hypercalls.rs"],
        script: "hello64/link.ld",
        emulation: "elf_x86_64",
        compile: rust_object,
    },
    Guest {
        name: "worker64",
        sources: &["schedule/worker.rs"],
        script: "hello64/link.ld",
        emulation: "elf_x86_64",
        compile: rust_object,
    },
    Guest {
        name: "migrate64",
        sources: &["migrate/pager.rs"],
        script: "migrate/link.ld",
        emulation: "elf_x86_64",
        compile: rust_object,
    },
    Guest {
        name: "hello32",
        sources: &["asm/hello32.S"],
        script: "asm/link.ld",
        emulation: "elf_i386",
        compile: |src, obj| assemble(src, obj, "--32"),
    },
    Guest {
        name: "hello16",
        sources: &["asm/hello16.S"],
        script: "asm/link.ld",
        emulation: "elf_i386",
        compile: |src, obj| assemble(src, obj, "--32"),
    },
    Guest {
        name: "hello64_c",
        sources: &["c/guest.c"],
        script: "c/link.ld",
        emulation: "elf_x86_64",
        compile: c_object,
    },
];

fn rust_object(src: &Path, obj: &Path) -> Command {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition=2024", "--crate-type=lib", "--crate-name=guest", "--emit=obj"])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "relocation-model=static",
            "-C",
            "code-model=small",
        ])
        .args(["-C", "opt-level=s", "-C", "debuginfo=0", "-C", "lto=off"])
        .arg("-o")
        .arg(obj)
        .arg(src);
    // The guest must not inherit the host build's flags (coverage, sanitizers, target-cpu).
    cmd.env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("RUSTFLAGS");
    cmd
}

fn assemble(src: &Path, obj: &Path, width: &str) -> Command {
    let mut cmd = Command::new("as");
    cmd.arg(width).arg("-o").arg(obj).arg(src);
    cmd
}

fn c_object(src: &Path, obj: &Path) -> Command {
    let mut cmd = Command::new(env::var_os("CC").unwrap_or_else(|| "gcc".into()));
    cmd.args([
        "-m64",
        "-ffreestanding",
        "-fno-pic",
        "-fno-stack-protector",
        "-mno-red-zone",
    ])
    .args([
        "-fno-asynchronous-unwind-tables",
        "-mgeneral-regs-only",
        "-O2",
        "-c",
        "-o",
    ])
    .arg(obj)
    .arg(src);
    cmd
}

fn run(mut cmd: Command, what: &str) {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("building the guests: {what} failed ({status}): {shown}"),
        Err(err) => panic!("building the guests: cannot run {what} ({err}); install binutils and gcc: {shown}"),
    }
}

/// Links an object at guest physical 0 and flattens it into `$OUT_DIR/<name>.bin`.
fn link_and_flatten(crate_dir: &Path, out_dir: &Path, name: &str, script: &str, emulation: &str) {
    let obj = out_dir.join(format!("{name}.o"));
    let elf = out_dir.join(format!("{name}.elf"));
    let bin = out_dir.join(format!("{name}.bin"));
    let mut link = Command::new("ld");
    link.args([
        "-m",
        emulation,
        "-static",
        "-nostdlib",
        "--gc-sections",
        "--build-id=none",
        "-T",
    ])
    .arg(crate_dir.join(script))
    .arg("-o")
    .arg(&elf)
    .arg(&obj);
    run(link, &format!("linking guest {name}"));
    let mut flatten = Command::new("objcopy");
    flatten.args(["-O", "binary"]).arg(&elf).arg(&bin);
    run(flatten, &format!("flattening guest {name}"));
}

/// The `# mode:` line of a corpus guest's header.
fn corpus_mode(source: &str) -> Option<&str> {
    source
        .lines()
        .find_map(|line| line.strip_prefix("# mode:"))
        .map(str::trim)
}

/// Builds every `corpus/*.S` by its `# mode:` header and lists them in `$OUT_DIR/corpus.rs`.
fn build_corpus(crate_dir: &Path, out_dir: &Path) {
    println!("cargo::rerun-if-changed=corpus");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(crate_dir.join("corpus"))
        .expect("guest/corpus is readable")
        .map(|entry| entry.expect("guest/corpus is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "S"))
        .collect();
    sources.sort();
    let mut listing =
        String::from("/// Generated by build.rs from guest/corpus/*.S.\npub const CORPUS: &[CorpusGuest] = &[\n");
    for src in &sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("corpus file names are UTF-8");
        let name = format!("corpus_{}", stem.replace('-', "_"));
        let text = std::fs::read_to_string(src).expect("corpus sources are UTF-8");
        let (width, emulation) = match corpus_mode(&text) {
            Some("long") => ("--64", "elf_x86_64"),
            Some("protected" | "paged32" | "real") => ("--32", "elf_i386"),
            other => panic!(
                "{}: the header needs '# mode: long|protected|paged32|real', found {other:?}",
                src.display()
            ),
        };
        run(
            assemble(src, &out_dir.join(format!("{name}.o")), width),
            &format!("assembling {}", src.display()),
        );
        link_and_flatten(crate_dir, out_dir, &name, "asm/link.ld", emulation);
        listing.push_str(&format!(
            "    CorpusGuest {{ name: {stem:?}, source: include_str!({path:?}), image: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.bin\")) }},\n",
            path = src.display().to_string()
        ));
    }
    listing.push_str("];\n");
    std::fs::write(out_dir.join("corpus.rs"), listing).expect("OUT_DIR is writable");
}

fn main() {
    let crate_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-changed=build.rs");
    for guest in GUESTS {
        for src in guest.sources {
            println!("cargo::rerun-if-changed={src}");
        }
        println!("cargo::rerun-if-changed={}", guest.script);
        let obj = out_dir.join(format!("{}.o", guest.name));
        run(
            (guest.compile)(&crate_dir.join(guest.sources[0]), &obj),
            &format!("compiling {}", guest.sources[0]),
        );
        link_and_flatten(&crate_dir, &out_dir, guest.name, guest.script, guest.emulation);
    }
    build_corpus(&crate_dir, &out_dir);
}
