//! Object identities and the object store.
//!
//! Every immutable thing in a repository is named by the BLAKE3 hash of its
//! bytes: file contents (blobs, stored raw so that a mount can serve them
//! straight from disk), tree nodes and change lists (JSON) under
//! `objects/`, and commit records under `commits/`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::storage::{BackgroundSync, SYNCFS_THRESHOLD, Storage};

use super::tree::Node;

/// How much of a file `ObjectId::of_file` reads at a time: enough for
/// BLAKE3 to hash many chunks at once with SIMD.
const HASH_BUFFER: usize = 128 << 10;

/// A BLAKE3 hash naming an object. Shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

/// A commit is named like any object, by the hash of its record.
pub type CommitId = ObjectId;

impl ObjectId {
    pub fn of(bytes: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }

    /// The id of a file's contents, read from where `file` stands to its
    /// end. Reads through a buffer kept per thread: blake3's own
    /// `update_reader` zeroes a fresh 64 KiB buffer on every call, which
    /// for a 4 KiB chunk costs more than hashing it (39% of the daemon's
    /// instructions while 10,000 small files were written and sealed).
    pub fn of_file(mut file: &File) -> io::Result<ObjectId> {
        thread_local! {
            static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        BUFFER.with_borrow_mut(|buffer| {
            if buffer.is_empty() {
                buffer.resize(HASH_BUFFER, 0);
            }
            let mut hasher = blake3::Hasher::new();
            loop {
                match file.read(buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buffer[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(ObjectId(*hasher.finalize().as_bytes()))
        })
    }

    pub fn to_hex(&self) -> String {
        self.hex().to_string()
    }

    /// The 64 hex digits, on the stack: nodes and change lists hold one
    /// id an entry.
    pub fn hex(&self) -> impl std::ops::Deref<Target = str> {
        Hex(self.hex_bytes())
    }

    /// The 64 lowercase hex digits as bytes, two per byte from a table:
    /// a commit of 100,000 files writes 200,000 of them.
    pub fn hex_bytes(&self) -> [u8; 64] {
        const DIGITS: [[u8; 2]; 256] = {
            let hex = b"0123456789abcdef";
            let mut table = [[0u8; 2]; 256];
            let mut i = 0;
            while i < 256 {
                table[i] = [hex[i >> 4], hex[i & 15]];
                i += 1;
            }
            table
        };
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair.copy_from_slice(&DIGITS[byte as usize]);
        }
        out
    }

    /// The first 12 hex digits, for tables read by people.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }

    /// The storage key of this object under `dir` (`objects` or
    /// `commits`), fanned out by its first byte.
    pub fn key_in(&self, dir: &str) -> String {
        let hex = self.to_hex();
        format!("{dir}/{}/{}", &hex[..2], &hex[2..])
    }
}

/// An id's hex digits, as [`ObjectId::hex`] gives them.
struct Hex([u8; 64]);

impl std::ops::Deref for Hex {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

impl FromStr for ObjectId {
    type Err = String;
    fn from_str(s: &str) -> Result<ObjectId, String> {
        blake3::Hash::from_hex(s)
            .map(|h| ObjectId(*h.as_bytes()))
            .map_err(|_| format!("'{s}' is not an object id (64 hex digits)"))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Most tree node entries kept in memory, counted as a node's entries or
/// children (at most [`super::tree::NODE_CAPACITY`], some 100 bytes each)
/// plus one: a directory of one chunk is a node of one entry, and 1,024 of
/// those weigh what four full nodes do.
const NODE_CACHE_WEIGHT: usize = 256 * 1024;

/// Tree nodes kept in memory, in two generations: a node read or written
/// goes into the newer one, and a node found in the older one moves back
/// into it; once the newer one weighs half the limit, it becomes the older
/// one and the older one is dropped. So the nodes in use stay (the root,
/// an array's chunk directory, read at every lookup below it) while nodes
/// read once go, within [`NODE_CACHE_WEIGHT`]. (Clearing the whole cache
/// at 1,024 nodes, as before, dropped the nodes in use too, and the nodes
/// read ahead of a reader of an array of a chunk per directory before it
/// came to them.)
#[derive(Debug, Default)]
struct NodeCache {
    newer: HashMap<ObjectId, Arc<Node>>,
    older: HashMap<ObjectId, Arc<Node>>,
    /// What `newer` weighs.
    newer_weight: usize,
}

impl NodeCache {
    fn get(&mut self, id: &ObjectId) -> Option<Arc<Node>> {
        if let Some(node) = self.newer.get(id) {
            return Some(node.clone());
        }
        let node = self.older.remove(id)?;
        self.insert(*id, node.clone());
        Some(node)
    }

    fn insert(&mut self, id: ObjectId, node: Arc<Node>) {
        let weight = node.weight();
        if self.newer_weight + weight > NODE_CACHE_WEIGHT / 2 {
            self.older = std::mem::take(&mut self.newer);
            self.newer_weight = 0;
        }
        self.newer_weight += weight;
        if let Some(replaced) = self.newer.insert(id, node) {
            self.newer_weight -= replaced.weight();
        }
    }

    #[cfg(test)]
    fn weight(&self) -> usize {
        self.newer
            .values()
            .chain(self.older.values())
            .map(|n| n.weight())
            .sum()
    }
}

impl Node {
    /// What a node weighs in [`NodeCache`].
    fn weight(&self) -> usize {
        1 + match self {
            Node::Leaf { entries } => entries.len(),
            Node::Inner { children } => children.len(),
        }
    }
}

/// The content-addressed store of blobs, tree nodes and change lists.
/// Clones share the storage and the cache of tree nodes, so that a commit
/// can build its tree on a thread of its own.
#[derive(Clone, Debug)]
pub struct Objects {
    storage: Arc<Storage>,
    nodes: Arc<Mutex<NodeCache>>,
}

/// What an operation wrote, to be made durable together before a ref may
/// point at it. Past a few dozen keys the whole filesystem is synced
/// anyway, so a batch of a million objects does not keep their names.
#[derive(Debug, Default)]
pub struct WriteBatch {
    keys: Vec<String>,
    count: usize,
    /// A sync started early, beside the writes (see
    /// [`WriteBatch::sync_beside`]).
    beside: Option<BackgroundSync>,
}

impl WriteBatch {
    pub fn push(&mut self, key: String) {
        self.push_with(|| key);
    }

    /// [`WriteBatch::push`], making the key only if it is kept: a batch
    /// past the threshold only counts.
    pub fn push_with(&mut self, key: impl FnOnce() -> String) {
        self.count += 1;
        if self.keys.len() <= SYNCFS_THRESHOLD {
            self.keys.push(key());
        }
    }

    /// Add what another batch wrote.
    pub fn append(&mut self, other: WriteBatch) {
        let unnamed = other.count - other.keys.len();
        for key in other.keys {
            self.push(key);
        }
        self.count += unnamed;
        if self.beside.is_none() {
            self.beside = other.beside;
        }
    }

    /// A sync of the filesystem started while the batch is written, so
    /// that the disk works meanwhile; [`WriteBatch::sync`] waits for it
    /// and fails with its error too (a write-back error is reported to
    /// one sync only).
    pub fn sync_beside(&mut self, sync: BackgroundSync) {
        self.beside = Some(sync);
    }

    /// How many keys were written.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Make everything written durable, and start over.
    pub fn sync(&mut self, storage: &Storage) -> io::Result<()> {
        let own = if self.count > self.keys.len() {
            storage.sync_filesystem()
        } else {
            storage.sync(&self.keys)
        };
        let beside = self.beside.take().map_or(Ok(()), BackgroundSync::finish);
        own?;
        beside?;
        self.keys.clear();
        self.count = 0;
        Ok(())
    }
}

impl Objects {
    pub fn new(storage: Arc<Storage>) -> Objects {
        Objects {
            storage,
            nodes: Arc::new(Mutex::new(NodeCache::default())),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The storage, for work handed to another thread.
    pub fn shared_storage(&self) -> Arc<Storage> {
        self.storage.clone()
    }

    /// Where a blob's bytes are on disk.
    pub fn blob_path(&self, id: ObjectId) -> PathBuf {
        self.storage.path_of(&id.key_in("objects"))
    }

    pub fn contains(&self, id: ObjectId) -> bool {
        self.storage.exists(&id.key_in("objects"))
    }

    /// Store bytes as an object and return its id.
    pub fn put(&self, bytes: &[u8], batch: &mut WriteBatch) -> io::Result<ObjectId> {
        let id = store_object(&self.storage, bytes)?;
        batch.push_with(|| id.key_in("objects"));
        Ok(id)
    }

    pub fn get(&self, id: ObjectId) -> io::Result<Vec<u8>> {
        self.storage
            .get(&id.key_in("objects"))?
            .ok_or_else(|| missing(id))
    }

    pub fn put_node(&self, node: Node, batch: &mut WriteBatch) -> io::Result<ObjectId> {
        let bytes = node.to_json();
        self.put_encoded_node(Arc::new(node), &bytes, batch)
    }

    /// [`Objects::put_node`] for a node already encoded: `bytes` is
    /// `node.to_json()`.
    pub fn put_encoded_node(
        &self,
        node: Arc<Node>,
        bytes: &[u8],
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        let id = self.put(bytes, batch)?;
        self.nodes.lock().unwrap().insert(id, node);
        Ok(id)
    }

    pub fn get_node(&self, id: ObjectId) -> io::Result<Arc<Node>> {
        if let Some(node) = self.nodes.lock().unwrap().get(&id) {
            return Ok(node.clone());
        }
        let bytes = self.get(id)?;
        let node: Arc<Node> = Arc::new(serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tree node {id} is corrupt: {e}"),
            )
        })?);
        self.nodes.lock().unwrap().insert(id, node.clone());
        Ok(node)
    }
}

/// Store bytes as an object (not durable yet) and return its id; for
/// work on other threads, which account for it in their batch later.
pub fn store_object(storage: &Storage, bytes: &[u8]) -> io::Result<ObjectId> {
    let id = ObjectId::of(bytes);
    storage.put(&id.key_in("objects"), bytes)?;
    Ok(id)
}

pub fn missing(id: ObjectId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("object {id} is missing from the repository"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::{Entry, EntryKind};

    #[test]
    fn nodes_in_use_stay_cached_while_many_read_once_pass_through() {
        let entry = |i: usize| Entry {
            name: format!("c{i}"),
            kind: EntryKind::File,
            id: ObjectId::of(&i.to_le_bytes()),
            size: 1,
            mode: 0o644,
        };
        let node = |i: usize, entries: usize| {
            let id = ObjectId::of(&i.to_le_bytes());
            let entries = (0..entries).map(entry).collect();
            (id, Arc::new(Node::Leaf { entries }))
        };
        let mut cache = NodeCache::default();
        let (hot, hot_node) = node(usize::MAX, 256);
        cache.insert(hot, hot_node);
        let passing = 4 * NODE_CACHE_WEIGHT / 100;
        for i in 0..passing {
            let (id, n) = node(i, 99);
            cache.insert(id, n);
            // The hot node is read at every lookup below it.
            assert!(
                cache.get(&hot).is_some(),
                "the node in use was dropped at {i}"
            );
            assert!(cache.weight() <= NODE_CACHE_WEIGHT);
        }
        assert!(cache.get(&node(0, 99).0).is_none(), "nodes read once go");
        assert!(cache.get(&node(passing - 1, 99).0).is_some());
        // Small nodes weigh little: many more of them stay.
        let mut cache = NodeCache::default();
        for i in 0..10_000 {
            let (id, n) = node(i, 1);
            cache.insert(id, n);
        }
        assert!(
            cache.get(&node(0, 1).0).is_some(),
            "10,000 nodes of one entry fit"
        );
    }

    #[test]
    fn a_file_hashes_as_its_bytes_across_buffer_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0,
            1,
            4096,
            HASH_BUFFER - 1,
            HASH_BUFFER,
            HASH_BUFFER + 1,
            3 * HASH_BUFFER + 7,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(size.to_string());
            std::fs::write(&path, &bytes).unwrap();
            let file = File::open(&path).unwrap();
            assert_eq!(
                ObjectId::of_file(&file).unwrap(),
                ObjectId::of(&bytes),
                "{size} bytes"
            );
        }
    }

    #[test]
    fn ids_round_trip_through_hex_and_reject_garbage() {
        let id = ObjectId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ObjectId>().unwrap(), id);
        assert_eq!(id.to_hex().len(), 64);
        // The table gives blake3's own hex.
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        let edges = ObjectId(
            [0x00, 0x0f, 0xf0, 0xff, 0x9a].repeat(7)[..32]
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            edges.to_hex(),
            blake3::Hash::from_bytes(edges.0).to_hex().as_str()
        );
        assert!("xyz".parse::<ObjectId>().is_err());
        assert!(
            id.key_in("objects")
                .starts_with(&format!("objects/{}/", &id.to_hex()[..2]))
        );
    }
}
