//! How journal entries are stored as redb values.

use std::io;
use std::path::Path;

use super::{FileSource, JournalEntry};
use crate::repo::ObjectId;

/// Journal values: a tag byte, then fixed-size little-endian fields.
/// Journals written before this encoding hold JSON objects, which start
/// with `{` and are still read.
mod tag {
    pub const STAGED_FILE: u8 = b'S';
    pub const BLOB_FILE: u8 = b'B';
    pub const DIR: u8 = b'D';
    pub const WHITEOUT: u8 = b'W';
}

impl JournalEntry {
    /// The entry as a journal value: `S mode n`, `B mode id size`,
    /// `D opaque` or `W`.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        match *self {
            JournalEntry::File { source, mode } => match source {
                FileSource::Staged(n) => {
                    out.push(tag::STAGED_FILE);
                    out.extend_from_slice(&mode.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                }
                FileSource::Blob { id, size } => {
                    out.push(tag::BLOB_FILE);
                    out.extend_from_slice(&mode.to_le_bytes());
                    out.extend_from_slice(&id.0);
                    out.extend_from_slice(&size.to_le_bytes());
                }
            },
            JournalEntry::Dir { opaque } => out.extend_from_slice(&[tag::DIR, opaque as u8]),
            JournalEntry::Whiteout => out.push(tag::WHITEOUT),
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<JournalEntry, String> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let entry = match bytes.first() {
            Some(b'{') => return serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Some(&tag::STAGED_FILE) if bytes.len() == 13 => {
                u32_at(1)
                    .zip(u64_at(5))
                    .map(|(mode, n)| JournalEntry::File {
                        source: FileSource::Staged(n),
                        mode,
                    })
            }
            Some(&tag::BLOB_FILE) if bytes.len() == 45 => {
                let id = ObjectId(bytes[5..37].try_into().expect("32 bytes"));
                u32_at(1)
                    .zip(u64_at(37))
                    .map(|(mode, size)| JournalEntry::File {
                        source: FileSource::Blob { id, size },
                        mode,
                    })
            }
            Some(&tag::DIR) if bytes.len() == 2 => Some(JournalEntry::Dir {
                opaque: bytes[1] != 0,
            }),
            Some(&tag::WHITEOUT) if bytes.len() == 1 => Some(JournalEntry::Whiteout),
            _ => None,
        };
        entry.ok_or_else(|| format!("unknown entry of {} bytes", bytes.len()))
    }
}

pub(super) fn decode(journal: &Path, path: &str, bytes: &[u8]) -> io::Result<JournalEntry> {
    JournalEntry::decode(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "session journal {} is corrupt at '{path}': {e}",
                journal.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written_and_journals_of_json_entries_still_read() {
        let id = ObjectId::of(b"bytes");
        let entries = [
            JournalEntry::File {
                source: FileSource::Staged(u64::MAX - 1),
                mode: 0o100_644,
            },
            JournalEntry::File {
                source: FileSource::Blob { id, size: 5 },
                mode: 0o755,
            },
            JournalEntry::Dir { opaque: true },
            JournalEntry::Dir { opaque: false },
            JournalEntry::Whiteout,
        ];
        for entry in entries {
            assert_eq!(JournalEntry::decode(&entry.encode()), Ok(entry));
            let json = serde_json::to_vec(&entry).unwrap();
            assert_eq!(JournalEntry::decode(&json), Ok(entry), "legacy JSON value");
        }
        let error = decode(Path::new("j.redb"), "a/b", b"S\x01").unwrap_err();
        assert!(error.to_string().contains("corrupt at 'a/b'"), "{error}");
    }
}
