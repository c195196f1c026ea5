//! Guest memory for the pure checks: fresh and zeroed as kvm-hello gives it, filled from the
//! judge's words, read back as the words a lab wrote.

use grader_protocol::Words;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// 2 MiB of zeroed guest memory at guest physical 0.
pub fn fresh() -> Result<GuestMemoryMmap, String> {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), kit_common::GUEST_MEMORY_SIZE)])
        .map_err(|err| format!("cannot allocate 2 MiB of guest memory: {err}"))
}

/// Writes the judge's words.
pub fn fill(memory: &GuestMemoryMmap, words: &[(u64, u64)]) -> Result<(), String> {
    for &(addr, word) in words {
        let at = GuestAddress(addr);
        memory
            .write_obj(word, at)
            .map_err(|err| format!("cannot write {addr:#x}: {err}"))?;
    }
    Ok(())
}

/// Every nonzero 8-byte word, at most `Words::MAX_WORDS` of them.
pub fn nonzero_words(memory: &GuestMemoryMmap) -> Words {
    let mut bytes = vec![0u8; kit_common::GUEST_MEMORY_SIZE];
    if memory.read_slice(&mut bytes, GuestAddress(0)).is_err() {
        return Words::default();
    }
    let mut words = Words::default();
    for (i, chunk) in bytes.chunks_exact(8).enumerate() {
        let value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if value != 0 {
            if words.words.len() == Words::MAX_WORDS {
                words.more = true;
                break;
            }
            words.words.push((i as u64 * 8, value));
        }
    }
    words
}
