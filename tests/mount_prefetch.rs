//! Reading ahead across files through a real mount: a program that opens
//! the files of a directory one after another finds the next ones in the
//! page cache (zarrfs(5), "Reading ahead"). Whether a file is in the page
//! cache is what mincore(2) says of its bytes on local disk: the
//! repository's object for a committed file, the session's staged file
//! for an uncommitted one. They are pushed out of the cache beforehand
//! with posix_fadvise(DONTNEED), which needs no privileges.

mod mount_util;

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mount_util::{Mount, Scratch, eventually};
use zarrfs::repo::ObjectId;

/// Files in the chunk directory; named 0..N, whose natural order (the
/// order a Zarr reader reads them in) is not their byte order.
const FILES: usize = 200;

fn content(i: usize) -> Vec<u8> {
    let mut bytes = vec![(i % 251) as u8; 8192];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    bytes
}

fn object_path(repo: &Path, i: usize) -> PathBuf {
    let hex = ObjectId::of(&content(i)).to_hex();
    repo.join("objects").join(&hex[..2]).join(&hex[2..])
}

/// Whether every page of the file is in the page cache.
fn resident(path: &Path) -> bool {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a read-only shared mapping of a whole open file, checked
    // with mincore into a vector of one byte per page, then unmapped.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap {}", path.display());
        let mut pages = vec![0u8; len.div_ceil(4096)];
        let ok = libc::mincore(map, len, pages.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(ok, 0, "mincore {}", path.display());
        pages.iter().all(|p| p & 1 == 1)
    }
}

/// Push files out of the page cache (written back first). False where
/// the filesystem keeps them in memory anyway (tmpfs): there is nothing
/// to read ahead, and the test says so and passes.
#[must_use]
fn evict(paths: &[PathBuf]) -> bool {
    for path in paths {
        let file = File::open(path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: posix_fadvise on an open descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let still = paths.iter().filter(|p| resident(p)).count();
    if still > 0 {
        eprintln!(
            "skipped: {still} files stay in memory after POSIX_FADV_DONTNEED (tmpfs?): {}",
            paths[0].display()
        );
    }
    still == 0
}

/// Read chunk `i` through the mount, as a reader would: open, read, close.
fn read_chunk(m: &Mount, i: usize) {
    read_as_expected(m, &format!("arr/c/{i}"), content(i));
}

/// Read the file at `path` in the mount (open, read, close) and check
/// that it holds `expected`.
fn read_as_expected(m: &Mount, path: &str, expected: Vec<u8>) {
    let mut bytes = Vec::new();
    File::open(m.path.join(path))
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(bytes, expected, "{path}");
}

/// Wait until the files of chunks `ahead` are in the page cache (for at
/// most 10 s), then check that chunk `beyond` is not.
fn assert_read_ahead(files: &[PathBuf], ahead: Range<usize>, beyond: Option<usize>) {
    assert!(
        eventually(Duration::from_secs(10), || ahead
            .clone()
            .all(|i| resident(&files[i]))),
        "chunks {ahead:?} not read ahead: {:?}",
        ahead
            .clone()
            .filter(|&i| !resident(&files[i]))
            .collect::<Vec<_>>()
    );
    if let Some(beyond) = beyond {
        assert!(!resident(&files[beyond]), "chunk {beyond} read ahead too");
    }
}

/// [`committed_chunks`], with their objects out of the page cache, and
/// the objects' paths; `None` where they cannot be evicted.
fn evicted_chunks() -> Option<(Scratch, Vec<PathBuf>)> {
    let scratch = committed_chunks();
    let objects: Vec<PathBuf> = (0..FILES).map(|i| object_path(&scratch.repo, i)).collect();
    evict(&objects).then_some((scratch, objects))
}

/// A repository whose main branch has FILES chunks in `arr/c/`.
fn committed_chunks() -> Scratch {
    let scratch = Scratch::new();
    let m = scratch.mount("writer", &[]);
    std::fs::create_dir_all(m.path.join("arr/c")).unwrap();
    for i in 0..FILES {
        std::fs::write(m.path.join(format!("arr/c/{i}")), content(i)).unwrap();
    }
    m.ok("echo chunks > .zarrfs/commit");
    m.unmount();
    scratch
}

#[test]
fn reading_chunks_in_order_reads_the_next_ones_ahead() {
    let Some((scratch, objects)) = evicted_chunks() else {
        return;
    };
    let m = scratch.mount("reader", &[]);

    read_chunk(&m, 0);
    read_chunk(&m, 1);
    // Two files opened in order: the next ones, in number order (2, 3,
    // ..., not 10, 100, 101, ... as bytes sort), come into the cache
    // without being opened; far beyond the window, nothing does.
    assert_read_ahead(&objects, 2..12, Some(150));

    // As the reader goes on, the window moves ahead of it.
    for i in 2..40 {
        read_chunk(&m, i);
    }
    assert_read_ahead(&objects, 40..60, None);
    m.unmount();
}

#[test]
fn files_opened_out_of_order_or_only_looked_up_are_not_read_ahead() {
    let Some((scratch, objects)) = evicted_chunks() else {
        return;
    };
    let m = scratch.mount("reader", &[]);

    // `ls -l` and `stat` look files up without reading them.
    m.ok("ls -l arr/c > /dev/null && stat arr/c/5 arr/c/6 > /dev/null");
    // Opens far apart are no sequence.
    for i in [0, 100, 30, 170] {
        read_chunk(&m, i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let ahead: Vec<usize> = (0..FILES)
        .filter(|i| ![0, 100, 30, 170].contains(i) && resident(&objects[*i]))
        .collect();
    assert!(ahead.is_empty(), "read ahead without a sequence: {ahead:?}");
    m.unmount();
}

#[test]
fn no_prefetch_turns_reading_ahead_off() {
    let Some((scratch, objects)) = evicted_chunks() else {
        return;
    };
    let m = scratch.mount("reader", &["--no-prefetch"]);
    for i in 0..10 {
        read_chunk(&m, i);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        (10..FILES).all(|i| !resident(&objects[i])),
        "--no-prefetch read ahead"
    );
    m.unmount();
}

#[test]
fn uncommitted_files_are_read_ahead_too() {
    let scratch = Scratch::new();
    // Without sealing, the files stay in the session's staging area.
    let m = scratch.mount("writer", &["--seal-delay", "off"]);
    std::fs::create_dir_all(m.path.join("arr/c")).unwrap();
    for i in 0..FILES {
        std::fs::write(m.path.join(format!("arr/c/{i}")), content(i)).unwrap();
    }
    let session = m.session();
    m.unmount();
    // Staged files are numbered in the order they were made: chunk i is
    // the i-th.
    let mut staged: Vec<(u64, PathBuf)> = std::fs::read_dir(scratch.repo.join("sessions"))
        .unwrap()
        .flat_map(|session| std::fs::read_dir(session.unwrap().path().join("staged")).unwrap())
        .map(|file| {
            let path = file.unwrap().path();
            let n = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            (n, path)
        })
        .collect();
    staged.sort();
    let staged: Vec<PathBuf> = staged.into_iter().map(|(_, path)| path).collect();
    assert_eq!(staged.len(), FILES, "staged files: {staged:?}");
    if !evict(&staged) {
        return;
    }

    // The same session, resumed at the same mountpoint. (Not its status,
    // which reads every staged file to compare it with the base.)
    let m = scratch.mount("writer", &["--seal-delay", "off"]);
    assert_eq!(m.session(), session, "the session was not resumed");
    read_chunk(&m, 0);
    read_chunk(&m, 1);
    assert_read_ahead(&staged, 2..12, Some(150));
    m.unmount();
}

/// Chunks per row of [`committed_rows`]; chunk (row, col) holds
/// `content(row * ROW + col)`.
const ROW: usize = 40;

/// A repository whose main branch has 3 rows of ROW chunks in
/// `arr/c/<row>/<col>`, as Zarr 3 lays out a 2-dimensional array by
/// default, with their objects out of the page cache; the objects' paths
/// by row. `None` where they cannot be evicted.
fn evicted_rows() -> Option<(Scratch, Vec<Vec<PathBuf>>)> {
    let scratch = Scratch::new();
    let m = scratch.mount("writer", &[]);
    for row in 0..3 {
        std::fs::create_dir_all(m.path.join(format!("arr/c/{row}"))).unwrap();
        for col in 0..ROW {
            let path = m.path.join(format!("arr/c/{row}/{col}"));
            std::fs::write(path, content(row * ROW + col)).unwrap();
        }
    }
    m.ok("echo rows > .zarrfs/commit");
    m.unmount();
    let objects: Vec<Vec<PathBuf>> = (0..3)
        .map(|row| {
            (0..ROW)
                .map(|col| object_path(&scratch.repo, row * ROW + col))
                .collect()
        })
        .collect();
    evict(&objects.concat()).then_some((scratch, objects))
}

#[test]
fn reading_a_row_of_chunks_reads_the_next_rows_directory_ahead() {
    let Some((scratch, objects)) = evicted_rows() else {
        return;
    };
    let m = scratch.mount("reader", &[]);
    for col in 0..ROW / 2 {
        read_as_expected(&m, &format!("arr/c/0/{col}"), content(col));
    }
    // Row 0 is read ahead to its end, and the reader will go on to row
    // 1 (c/1/0 after c/0/39): its first chunks come into the cache before
    // anything there is opened. Row 2 is a row further: not yet.
    assert_read_ahead(&objects[0], ROW / 2..ROW, None);
    assert_read_ahead(&objects[1], 0..ROW / 2, None);
    assert!(!resident(&objects[2][0]), "row 2 read ahead too");
    m.unmount();
}

/// A repository whose main branch has `steps` chunks in
/// `series/c/<t>/0/0`, as Zarr 3 lays out an array chunked along its
/// first dimension alone (a time step per chunk), one chunk per
/// directory, with their objects out of the page cache; the objects'
/// paths. `None` where they cannot be evicted.
fn evicted_series(steps: usize) -> Option<(Scratch, Vec<PathBuf>)> {
    let scratch = Scratch::new();
    let m = scratch.mount("writer", &[]);
    for t in 0..steps {
        let dir = m.path.join(format!("series/c/{t}/0"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0"), content(t)).unwrap();
    }
    m.ok("echo series > .zarrfs/commit");
    m.unmount();
    let objects: Vec<PathBuf> = (0..steps).map(|t| object_path(&scratch.repo, t)).collect();
    evict(&objects).then_some((scratch, objects))
}

#[test]
fn reading_a_chunk_per_directory_in_order_reads_the_next_directories_ahead() {
    let Some((scratch, objects)) = evicted_series(60) else {
        return;
    };
    let m = scratch.mount("reader", &[]);
    for t in 0..5 {
        read_as_expected(&m, &format!("series/c/{t}/0/0"), content(t));
    }
    // No directory sees a second open, but the reader walks from one
    // directory to the next (c/1/0 after c/0/0): the chunks of the
    // directories after it come into the cache; far beyond, none.
    assert_read_ahead(&objects, 5..15, Some(50));
    m.unmount();
}
