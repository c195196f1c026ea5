//! What every command knows about the kit: its labs, where it sits, how to copy it, and the exit
//! statuses of `cargo xtask`.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// A lab crate: its number and its folder under `labs/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lab {
    /// The lab's number (`cargo grade labN`).
    pub number: u8,
    /// Its folder under `labs/`, also the crate's name.
    pub dir: &'static str,
}

impl Lab {
    /// The file a student edits, relative to the kit's root.
    pub fn file(self) -> String {
        format!("labs/{}/src/lib.rs", self.dir)
    }

    /// The crate's library name as rustc reports it (`lab1_memory`).
    pub fn target_name(self) -> String {
        self.dir.replace('-', "_")
    }

    /// Where the untouched stub of this lab is kept in a student copy, relative to the root.
    pub fn stub_copy(self) -> String {
        format!("{STUBS_DIR}/{}.rs", self.dir)
    }

    /// The reference beside the lab file (instructors' repository only).
    pub fn solution_file(self) -> String {
        format!("labs/{}/src/solution.rs", self.dir)
    }
}

/// Every lab, in the order of their numbers.
pub const LABS: [Lab; 8] = [
    Lab {
        number: 0,
        dir: "lab0-lwn",
    },
    Lab {
        number: 1,
        dir: "lab1-memory",
    },
    Lab {
        number: 2,
        dir: "lab2-paging",
    },
    Lab {
        number: 3,
        dir: "lab3-registers",
    },
    Lab {
        number: 4,
        dir: "lab4-exit-loop",
    },
    Lab {
        number: 5,
        dir: "lab5-hypercalls",
    },
    Lab {
        number: 6,
        dir: "lab6-scheduling",
    },
    Lab {
        number: 7,
        dir: "lab7-migration",
    },
];

/// Where a student copy keeps the untouched stubs (written by `student-kit`), so that `cargo grade`
/// can grade the other labs when one lab file does not compile.
pub const STUBS_DIR: &str = "xtask/stubs";

/// The gate of a stub in an instructors' lab file.
pub const STUB_GATE: &str = "#[cfg(not(feature = \"solution\"))]";

/// The names of the functions a reference defines (`pub fn NAME` at the start of a line).
pub fn reference_functions(solution: &str) -> Vec<&str> {
    solution
        .lines()
        .filter_map(|line| line.strip_prefix("pub fn "))
        .filter_map(|rest| rest.split(['(', '<']).next())
        .collect()
}

/// Why `source` is not the untouched exercise of `lab`, if it is not: every function its reference
/// `solution` defines must still be there, gated out of the solution build, with the `todo!` that
/// names it as its body.
pub fn stub_problem(lab: Lab, source: &str, solution: &str) -> Option<String> {
    let names = reference_functions(solution);
    if names.is_empty() {
        return Some(format!("{} defines no pub fn", lab.solution_file()));
    }
    for name in names {
        let head = format!("{STUB_GATE}\npub fn {name}");
        let Some(at) = source.find(&head) else {
            return Some(format!("{name} is not a stub gated by {STUB_GATE}"));
        };
        let body = source[at..].split("\n}\n").next().unwrap_or_default();
        if !body.contains(&format!("todo!(\"lab{} {name} (", lab.number)) {
            return Some(format!("{name} is not its todo! stub"));
        }
    }
    None
}

/// The untouched exercise of `lab` in the kit at `root`, from a pristine source, never from
/// whatever a student or an instructor trying the labs put in the lab file: the copy a student
/// kit keeps in `xtask/stubs/`; in the instructors' repository the lab file if it is untouched
/// (and `working_tree` allows it: a lab file that does not compile is not untouched, whatever its
/// stubs look like), else its newest committed version that is (`git rev-list HEAD -- FILE`).
/// Fails with one line.
pub fn pristine_stub(root: &Path, lab: Lab, working_tree: bool) -> Result<String, String> {
    if let Ok(stub) = std::fs::read_to_string(root.join(lab.stub_copy())) {
        return Ok(stub);
    }
    let file = lab.file();
    let solution_path = root.join(lab.solution_file());
    let solution = std::fs::read_to_string(&solution_path).map_err(|err| {
        format!(
            "no untouched copy of {file}: neither {} nor {} ({err})",
            lab.stub_copy(),
            lab.solution_file()
        )
    })?;
    let working = std::fs::read_to_string(root.join(&file)).map_err(|err| io_error("read", &root.join(&file), err))?;
    let problem = match stub_problem(lab, &working, &solution) {
        None if working_tree => return Ok(working),
        None => "it does not compile".to_owned(),
        Some(problem) => problem,
    };
    for rev in git(root, &["rev-list", "HEAD", "--", &file])
        .unwrap_or_default()
        .lines()
    {
        if let Some(old) = git(root, &["show", &format!("{rev}:{file}")])
            && stub_problem(lab, &old, &solution).is_none()
        {
            return Ok(old);
        }
    }
    Err(format!(
        "{file} is not the untouched exercise ({problem}), and no committed version of it is: restore it from a clean checkout of the kit"
    ))
}

/// `git ARGS` in `root`: its output, or `None` when git fails or is missing.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .current_dir(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Exit statuses of `cargo xtask` (the grader's own statuses pass through `cargo grade`; the
/// instructors' commands add 2, bad usage or input, 5, a repository not fit to export, 6, files git
/// does not track where the export reads, 7, a repository that is not a git checkout, and 8, a
/// check of the reference that did not pass every run of `stability`).
pub mod status {
    /// Bad usage (as the grader's own).
    pub const USAGE: u8 = 2;
    /// The kit itself does not build, outside the lab files.
    pub const KIT_BROKEN: u8 = 3;
    /// A file could not be read, written or copied, or a tool could not be started.
    pub const IO: u8 = 4;
}

/// The kit's root: the workspace above this crate (`cargo run` sets `CARGO_MANIFEST_DIR`).
pub fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo that runs us, or the one on the PATH.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Folders never copied out of a kit: builds, git's data, the rendered book.
pub fn is_build_output(relative: &Path) -> bool {
    let text = relative.to_string_lossy();
    relative.starts_with("target")
        || relative.starts_with(".git")
        || text == "book/book"
        || text.starts_with("book/book/")
}

/// Every file under `root` (relative paths, sorted), skipping build output.
pub fn files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(root.join(&dir))? {
            let entry = entry?;
            let relative = dir.join(entry.file_name());
            if is_build_output(&relative) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(relative);
            } else if kind.is_file() {
                found.push(relative);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `contents` to `path` unless it already holds exactly that (an unchanged file keeps its
/// modification time, so cargo does not rebuild what did not change), creating its folder.
pub fn write_if_changed(path: &Path, contents: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)
}

/// Makes the folder `to` hold exactly `files` (relative paths, with their contents) besides its
/// build output: changed files are written, files that did not change keep their time stamps (so
/// cargo does not rebuild what did not change), and files that are no longer there are removed
/// (a module that moved must not be found twice).
pub fn sync_tree(to: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<(), String> {
    let wanted: std::collections::HashSet<&Path> = files.iter().map(|(path, _)| path.as_path()).collect();
    if to.is_dir() {
        for old in self::files(to).map_err(|err| io_error("list the files of", to, err))? {
            if !wanted.contains(old.as_path()) {
                let path = to.join(&old);
                std::fs::remove_file(&path).map_err(|err| io_error("remove", &path, err))?;
            }
        }
    }
    for (relative, contents) in files {
        let path = to.join(relative);
        write_if_changed(&path, contents).map_err(|err| io_error("write", &path, err))?;
    }
    Ok(())
}

/// An I/O error with the file it happened on.
pub fn io_error(what: &str, path: &Path, err: io::Error) -> String {
    format!("cannot {what} {}: {err}", path.display())
}

/// The processes this xtask started and waits for itself (builds, gradings), which the orphan
/// reaper of `grade-submissions` leaves alone. Hold the lock from before `spawn` until the pid is
/// in, so the reaper never takes a child that has just been started.
pub fn own_children() -> &'static std::sync::Mutex<std::collections::HashSet<libc::pid_t>> {
    static CHILDREN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<libc::pid_t>>> =
        std::sync::OnceLock::new();
    CHILDREN.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_tree_loses_moved_files_and_keeps_unchanged_ones() {
        let dir = std::env::temp_dir().join(format!("xtask-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = [
            (PathBuf::from("src/vmm.rs"), b"old".to_vec()),
            (PathBuf::from("src/lib.rs"), b"lib".to_vec()),
        ];
        sync_tree(&dir, &first).unwrap();
        std::fs::create_dir_all(dir.join("target")).unwrap();
        std::fs::write(dir.join("target/keep"), "build").unwrap();
        let lib_written = std::fs::metadata(dir.join("src/lib.rs")).unwrap().modified().unwrap();
        let second = [
            (PathBuf::from("src/vmm/mod.rs"), b"new".to_vec()),
            (PathBuf::from("src/lib.rs"), b"lib".to_vec()),
        ];
        sync_tree(&dir, &second).unwrap();
        assert!(!dir.join("src/vmm.rs").exists(), "a moved module is found twice");
        assert_eq!(std::fs::read(dir.join("src/vmm/mod.rs")).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(dir.join("src/lib.rs")).unwrap().modified().unwrap(),
            lib_written
        );
        assert!(dir.join("target/keep").exists(), "the build output is kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
