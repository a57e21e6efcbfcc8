#!/usr/bin/env python3
"""Write or read a tree of files with plain open/write/close system calls.

The same script drives both sides of a comparison (a zarrfs mount and a
plain directory on the same filesystem), so that interpreter overhead is
the same on both. Only the file operations are timed: interpreter start-up
is not.

Layout: ROOT/dNNNN/fNNNN, `--dirs` directories of `--per-dir` files each,
directories numbered from `--first-dir`. Each file holds `--size` bytes:
one random buffer (new in each run, made before the clock starts) with
the file's own number stamped into its first bytes, so that no two files
have the same content (zarrfs stores content-addressed blobs, and identical files would
share one object and flatter the read side).

    files.py write ROOT --dirs 100 --per-dir 1000 --size 4096
    files.py read  ROOT --dirs 100 --per-dir 1000 --size 4096

write: mkdir each directory, then per file os.open(O_WRONLY|O_CREAT|O_TRUNC),
  os.write in `--block`-byte pieces, os.close. No fsync.
read: per file os.open(O_RDONLY), os.readv into one `--block`-byte buffer
  until end of file, os.close. Names are known; nothing is listed.

Prints one JSON object: seconds, files, bytes.
"""

import argparse
import json
import os
import sys
import time


def paths(root, first_dir, dirs, per_dir):
    for d in range(first_dir, first_dir + dirs):
        directory = os.path.join(root, f"d{d:04d}")
        yield directory, [os.path.join(directory, f"f{f:04d}") for f in range(per_dir)]


def write(args):
    buf = bytearray(os.urandom(args.size))
    view = memoryview(buf)
    stamp_len = min(16, args.size)
    block = args.block
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    layout = list(paths(args.root, args.first_dir, args.dirs, args.per_dir))
    n = 0
    start = time.perf_counter()
    for directory, files in layout:
        os.makedirs(directory, exist_ok=True)
        for path in files:
            buf[:stamp_len] = f"{n:016d}".encode()[-stamp_len:]
            fd = os.open(path, flags, 0o644)
            off = 0
            while off < args.size:
                off += os.write(fd, view[off : off + block])
            os.close(fd)
            n += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "files": n, "bytes": n * args.size}


def read(args):
    buf = bytearray(args.block)
    layout = list(paths(args.root, args.first_dir, args.dirs, args.per_dir))
    n = 0
    total = 0
    start = time.perf_counter()
    for _, files in layout:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            while True:
                got = os.readv(fd, [buf])
                if got == 0:
                    break
                total += got
            os.close(fd)
            n += 1
    seconds = time.perf_counter() - start
    if total != n * args.size:
        sys.exit(f"files.py: read {total} bytes, expected {n * args.size}")
    return {"seconds": seconds, "files": n, "bytes": total}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", choices=["write", "read"])
    p.add_argument("root")
    p.add_argument("--dirs", type=int, required=True)
    p.add_argument("--per-dir", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--first-dir", type=int, default=0)
    p.add_argument("--block", type=int, default=1 << 20)
    args = p.parse_args()
    result = write(args) if args.op == "write" else read(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
