//! A writer for the "newc" cpio format, the one the Linux kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Each entry is a 110-byte ASCII header (the magic `070701` and 13 fields of 8 hex digits), the
//! NUL-terminated name padded to a multiple of 4 bytes, then the data padded the same way. The
//! archive ends with the entry `TRAILER!!!`.

use std::collections::BTreeSet;

/// The magic of the newc format (no checksums).
const MAGIC: &str = "070701";
/// Every header and every data block starts on a multiple of this.
const ALIGN: usize = 4;
/// The name of the last entry.
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being written, in memory. Paths are relative to the root (`bin/busybox`); a parent
/// directory is added before the first entry inside it, as the kernel needs.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str) {
        let path = clean(path);
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        self.parents(path);
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let path = clean(path);
        self.parents(path);
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// A character device node, e.g. `dev/console` (5, 1).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        let path = clean(path);
        self.parents(path);
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// The archive's bytes, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry(TRAILER, 0, 1, (0, 0), &[]);
        self.bytes
    }

    fn parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, (rdev_major, rdev_minor): (u32, u32), data: &[u8]) {
        let ino = if name == TRAILER {
            0
        } else {
            self.next_ino += 1;
            self.next_ino
        };
        let size = u32::try_from(data.len()).expect("an initramfs file is smaller than 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("a short path");
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
        // namesize, check.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
        ];
        self.bytes.extend_from_slice(MAGIC.as_bytes());
        for field in fields {
            self.bytes.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(padded, 0);
    }
}

/// Paths inside the archive have no leading `/` (the kernel takes them relative to `/`).
fn clean(path: &str) -> &str {
    path.trim_start_matches('/').trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back: name, mode, rdev and data.
    #[derive(Debug, PartialEq)]
    struct Entry {
        name: String,
        mode: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// A reader written from the format description, independent of the writer: checks the
    /// magic, the alignment and the trailer, and returns the entries before the trailer.
    fn read(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "header at {at} is not aligned");
            assert_eq!(&archive[at..at + 6], b"070701", "magic at {at}");
            let field = |index: usize| {
                let start = at + 6 + index * 8;
                u32::from_str_radix(std::str::from_utf8(&archive[start..start + 8]).unwrap(), 16).unwrap()
            };
            let (mode, size, rdev) = (field(1), field(6) as usize, (field(9), field(10)));
            let name_size = field(11) as usize;
            let name_start = at + 110;
            let name = std::str::from_utf8(&archive[name_start..name_start + name_size - 1]).unwrap();
            assert_eq!(archive[name_start + name_size - 1], 0, "{name} is NUL-terminated");
            let data_start = (name_start + name_size).next_multiple_of(4);
            let data = archive[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len(), "nothing after the trailer");
                return entries;
            }
            entries.push(Entry {
                name: name.to_owned(),
                mode,
                rdev,
                data,
            });
        }
    }

    fn header(fields: [u32; 13]) -> String {
        fields.iter().fold("070701".to_owned(), |s, f| s + &format!("{f:08x}"))
    }

    #[test]
    fn a_one_file_archive_is_byte_for_byte_the_format() {
        let mut archive = Archive::new();
        archive.file("/init", 0o755, b"hi\n");
        let bytes = archive.finish();
        // "init\0" ends at 115, padded to 116; the 3 data bytes are padded to 4.
        let file = header([1, 0o100_755, 0, 0, 1, 0, 3, 0, 0, 0, 0, 5, 0]) + "init\0\0" + "hi\n\0";
        // "TRAILER!!!\0" ends at 121 bytes into its entry, padded to 124.
        let trailer = header([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]) + "TRAILER!!!\0\0\0\0";
        assert_eq!(String::from_utf8(bytes).unwrap(), file + &trailer);
    }

    #[test]
    fn parents_come_first_once_and_every_kind_reads_back() {
        let mut archive = Archive::new();
        archive.file("lib/x86_64-linux-gnu/libc.so.6", 0o755, &[0x7f, b'E', b'L', b'F', 1]);
        archive.file("lib/x86_64-linux-gnu/libgcc_s.so.1", 0o644, b"");
        archive.file("bin/busybox", 0o755, b"\x7fELF");
        archive.char_device("dev/console", 0o600, 5, 1);
        archive.dir("lib");
        archive.dir("tmp/");
        let entries = read(&archive.finish());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lib",
                "lib/x86_64-linux-gnu",
                "lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libgcc_s.so.1",
                "bin",
                "bin/busybox",
                "dev",
                "dev/console",
                "tmp",
            ]
        );
        assert_eq!(entries[0].mode, 0o040_755);
        assert_eq!(entries[2].mode, 0o100_755);
        assert_eq!(entries[2].data, [0x7f, b'E', b'L', b'F', 1]);
        assert_eq!(entries[3].mode, 0o100_644);
        assert_eq!(
            (entries[5].mode, entries[5].data.as_slice()),
            (0o100_755, &b"\x7fELF"[..])
        );
        assert_eq!((entries[7].mode, entries[7].rdev), (0o020_600, (5, 1)));
    }

    #[test]
    fn data_of_every_length_stays_aligned() {
        let mut archive = Archive::new();
        for len in 0..9 {
            archive.file(&format!("f{len}"), 0o644, &vec![b'x'; len]);
        }
        let entries = read(&archive.finish());
        for (len, entry) in entries.iter().enumerate() {
            assert_eq!(entry.data.len(), len, "{}", entry.name);
        }
    }
}
