#!/usr/bin/env python3
"""W7 helper: write or read one Zarr array with zarr-python 3 on one store.

    zarr_e2e.py write|read plain|zarrfs|icechunk PATH --array NAME
                --shape R,C --chunks R,C [--durable]

Stores:
  plain     zarr.storage.LocalStore(PATH) on a plain directory
  zarrfs    zarr.storage.LocalStore(PATH) where PATH is a zarrfs mount;
            a write is followed by a commit (echo msg > PATH/.zarrfs/commit)
  icechunk  icechunk.local_filesystem_storage(PATH): the repository is
            opened (or created) before the clock starts; the timed part is
            repo.writable_session("main"), the write, session.commit(...)
            (reads: repo.readonly_session(branch="main"))

The array is float32, uncompressed (compressors=None: the comparison is
about the store, and random data does not compress anyway), filled from a
random generator seeded by the array's name before the clock starts: an
array written again under another name holds other bytes, as new data
would (zarrfs stores a chunk once by its hash, so the same bytes again
would measure its deduplication instead of a write). A write times
create_array + arr[:] = data (+ the commit); a read times open_array +
arr[:] and checks the values against the same generator.

--durable (plain and icechunk writes): the timed part ends with
syncfs(2) on PATH's filesystem, so that the written data is on the disk
when the clock stops, as a zarrfs commit leaves it (neither LocalStore
nor Icechunk's local storage syncs what it writes).

Prints one JSON object: seconds, bytes, chunks, the split of a write
into write_seconds, commit_seconds and sync_seconds, and cpu_seconds,
the CPU time this process (all its threads) used in the timed part.
"""

import argparse
import ctypes
import json
import math
import os
import time
import zlib

import numpy as np
import zarr


def data_for(name, shape):
    seed = zlib.crc32(name.encode())
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def commit_zarrfs(mount, message):
    fd = os.open(os.path.join(mount, ".zarrfs", "commit"), os.O_WRONLY)
    try:
        os.write(fd, message.encode() + b"\n")
    finally:
        os.close(fd)


def syncfs(path):
    """syncfs(2) on the filesystem holding `path` (Python has no os.syncfs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", choices=["write", "read"])
    p.add_argument("store", choices=["plain", "zarrfs", "icechunk"])
    p.add_argument("path")
    p.add_argument("--array", required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--chunks", required=True)
    p.add_argument("--durable", action="store_true",
                   help="end a plain or icechunk write with syncfs(2) on PATH, timed")
    args = p.parse_args()
    if args.durable and (args.op != "write" or args.store == "zarrfs"):
        p.error("--durable is for plain and icechunk writes (a zarrfs commit makes its data durable)")
    shape = tuple(int(x) for x in args.shape.split(","))
    chunks = tuple(int(x) for x in args.chunks.split(","))
    nchunks = math.prod(-(-s // c) for s, c in zip(shape, chunks))
    expected = data_for(args.array, shape)

    repo = None
    if args.store == "icechunk":
        import icechunk

        storage = icechunk.local_filesystem_storage(args.path)
        repo = icechunk.Repository.open_or_create(storage)

    commit_seconds = 0.0
    sync_seconds = 0.0
    cpu_start = time.process_time()
    if args.op == "write":
        start = time.perf_counter()
        session = None
        if repo is not None:
            session = repo.writable_session("main")
            store = session.store
        else:
            store = zarr.storage.LocalStore(args.path)
        arr = zarr.create_array(
            store,
            name=args.array,
            shape=shape,
            chunks=chunks,
            dtype="float32",
            compressors=None,
            fill_value=0.0,
        )
        arr[:] = expected
        written = time.perf_counter()
        if session is not None:
            session.commit(f"bench: write {args.array}")
        elif args.store == "zarrfs":
            commit_zarrfs(args.path, f"bench: write {args.array}")
        committed = time.perf_counter()
        if args.durable:
            syncfs(args.path)
        end = time.perf_counter()
        commit_seconds = committed - written
        sync_seconds = end - committed
    else:
        start = time.perf_counter()
        if repo is not None:
            store = repo.readonly_session(branch="main").store
        else:
            store = zarr.storage.LocalStore(args.path, read_only=True)
        arr = zarr.open_array(store, path=args.array, mode="r")
        got = arr[:]
        end = time.perf_counter()
    cpu = time.process_time() - cpu_start
    if args.op == "read":
        if not np.array_equal(got, expected):
            raise SystemExit(f"zarr_e2e.py: {args.store}: read back different values")

    print(json.dumps({
        "seconds": end - start,
        "write_seconds": end - start - commit_seconds - sync_seconds,
        "commit_seconds": commit_seconds,
        "sync_seconds": sync_seconds,
        "bytes": expected.nbytes,
        "chunks": nchunks,
        "cpu_seconds": cpu,
    }))


if __name__ == "__main__":
    main()
