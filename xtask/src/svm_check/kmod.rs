//! Kernel modules for the SVM guest: which files to load, in which order, from `modules.dep`.
//!
//! `modules.dep` has one line per module, `kernel/arch/x86/kvm/kvm-amd.ko: DEP DEP ...`, paths
//! relative to `/lib/modules/VERSION`. A module must be loaded after everything it depends on.
//! Debian's kernels ship plain `.ko` files (bookworm) or compressed ones (`.ko.xz`, `.ko.zst`
//! in later releases); busybox's `insmod` takes plain ones, so compressed modules are
//! decompressed on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use super::Error;

/// The modules that give the guest kernel `/dev/kvm` on AMD-V, their dependencies resolved.
pub const KVM_AMD: &str = "kvm-amd";

/// `modules.dep`, by module name (`kvm_amd`: dashes and underscores are the same to the kernel).
#[derive(Debug, Default)]
pub struct ModulesDep {
    modules: BTreeMap<String, Module>,
}

#[derive(Debug)]
struct Module {
    path: String,
    deps: Vec<String>,
}

/// `kernel/arch/x86/kvm/kvm-amd.ko.xz` -> `kvm_amd`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    stem.replace('-', "_")
}

impl ModulesDep {
    pub fn parse(text: &str) -> Self {
        let modules = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(path, deps)| {
                let module = Module {
                    path: path.trim().to_owned(),
                    deps: deps.split_whitespace().map(str::to_owned).collect(),
                };
                (module_name(path), module)
            })
            .collect();
        Self { modules }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&module_name(name))
    }

    /// The paths to load for `name`, dependencies first, each once.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        self.visit(&module_name(name), &mut BTreeSet::new(), &mut order)?;
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) -> Result<(), String> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let module = self
            .modules
            .get(name)
            .ok_or_else(|| format!("module {name} is not in modules.dep"))?;
        // modules.dep lists the deepest dependencies last: visiting them in reverse loads the
        // order modprobe would.
        for dep in module.deps.iter().rev() {
            self.visit(&module_name(dep), seen, order)?;
        }
        order.push(module.path.clone());
        Ok(())
    }
}

/// How a module file is compressed, and the tool (with its Debian package) that expands it.
fn decompressor(path: &str) -> Option<(&'static str, &'static str)> {
    match path.rsplit_once(".ko")?.1 {
        ".xz" => Some(("xz", "xz-utils")),
        ".zst" => Some(("zstd", "zstd")),
        ".gz" => Some(("gzip", "gzip")),
        _ => None,
    }
}

/// The module file's contents, decompressed: what busybox's `insmod` loads.
pub fn read_module(modules_dir: &Path, path: &str) -> Result<Vec<u8>, Error> {
    let file = modules_dir.join(path);
    let Some((tool, package)) = decompressor(path) else {
        return std::fs::read(&file).map_err(|err| Error::io(format!("reading {}", file.display()), err));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(&file)
        .output()
        .map_err(|_| Error::Missing(vec![(format!("{tool}, to decompress {}", file.display()), package)]))?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "{tool} -dc {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The file name a module gets in the initramfs: plain `.ko`.
pub fn plain_file_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    format!("{stem}.ko")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of Debian 12's `modules.dep` (6.1.0-56-amd64) that matter, with neighbours.
    const DEBIAN_12: &str = "\
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/crypto/ccp/ccp.ko:
kernel/drivers/crypto/ccp/ccp-crypto.ko: kernel/drivers/crypto/ccp/ccp.ko
kernel/virt/lib/irqbypass.ko:
";

    #[test]
    fn kvm_amd_comes_after_everything_it_needs() {
        let dep = ModulesDep::parse(DEBIAN_12);
        let order = dep.load_order(KVM_AMD).unwrap();
        assert_eq!(
            order,
            [
                "kernel/virt/lib/irqbypass.ko",
                "kernel/arch/x86/kvm/kvm.ko",
                "kernel/drivers/crypto/ccp/ccp.ko",
                "kernel/arch/x86/kvm/kvm-amd.ko",
            ]
        );
    }

    #[test]
    fn every_module_is_loaded_after_its_own_dependencies() {
        // A made-up chain where a dependency of a dependency is listed only on its own line.
        let dep = ModulesDep::parse("a/top.ko.xz: b/mid.ko.xz\nb/mid.ko.xz: c/low_level.ko.xz\nc/low_level.ko.xz:\n");
        assert_eq!(
            dep.load_order("top").unwrap(),
            ["c/low_level.ko.xz", "b/mid.ko.xz", "a/top.ko.xz"]
        );
        assert!(dep.contains("low-level"), "dashes and underscores are one name");
    }

    #[test]
    fn a_missing_module_is_named() {
        let dep = ModulesDep::parse("kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko\n");
        let err = dep.load_order(KVM_AMD).unwrap_err();
        assert_eq!(err, "module kvm is not in modules.dep");
        assert!(!ModulesDep::parse(DEBIAN_12).contains("kvm-pvm"));
    }

    #[test]
    fn compressed_modules_are_named_plainly_and_expanded_by_the_right_tool() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko.zst"), "kvm_amd");
        assert_eq!(plain_file_name("kernel/arch/x86/kvm/kvm-amd.ko.xz"), "kvm-amd.ko");
        assert_eq!(plain_file_name("kernel/virt/lib/irqbypass.ko"), "irqbypass.ko");
        assert_eq!(decompressor("x/kvm.ko.xz"), Some(("xz", "xz-utils")));
        assert_eq!(decompressor("x/kvm.ko.zst"), Some(("zstd", "zstd")));
        assert_eq!(decompressor("x/kvm.ko"), None);
    }
}
