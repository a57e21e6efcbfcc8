//! Tree nodes and change-list pages written as JSON directly: the same
//! bytes as `serde_json::to_vec` of their types (tests compare the two),
//! without its general path. A commit of many new files writes one node
//! entry and one change record per file, and serde_json escapes every key
//! and formats every id and number through it (a flattened enum, as a
//! change record's, even through a map). Only names and paths can need
//! escaping.

use super::object::ObjectId;

/// `open`, the items written by `item` and separated by commas, `close`.
pub(super) fn list<T>(
    open: &[u8],
    items: &[T],
    bytes_each: usize,
    close: &[u8],
    item: impl Fn(&mut Vec<u8>, &T),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(open.len() + close.len() + items.len() * bytes_each);
    out.extend_from_slice(open);
    for (i, each) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(&mut out, each);
    }
    out.extend_from_slice(close);
    out
}

/// A JSON string.
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    // Most names need no escaping: copied as they are.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("a string serializes");
    }
}

/// An object id, as its 64 hex digits in a string.
pub(super) fn id(out: &mut Vec<u8>, id: &ObjectId) {
    out.push(b'"');
    out.extend_from_slice(&id.hex_bytes());
    out.push(b'"');
}

pub(super) fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}
