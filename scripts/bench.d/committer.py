#!/usr/bin/env python3
"""Write files through a zarrfs mount and commit, in a loop.

    committer.py MOUNT --commits 50 --files 1 --size 4096 --prefix w6/m3 [--barrier]

For each of `--commits` rounds: write `--files` new files of `--size`
bytes under MOUNT/PREFIX/cNNNN/ (open/write/close), then commit by
writing a message to MOUNT/.zarrfs/commit, as `echo msg > .zarrfs/commit`
does (open, one write(2), close). A failed commit (the write fails) is
recorded with the error the mount reports in .zarrfs/commit, and the loop
goes on.

With --barrier, print "ready" and wait for a line on stdin before the
first round, so that a driver can start many committers at once.

Prints one JSON object: seconds (whole loop), ok, failed, errors (first
few), commit_seconds (each commit's latency, in order).
"""

import argparse
import json
import os
import sys
import time


def commit(mount, message):
    """Commit; returns (seconds, error or None)."""
    control = os.path.join(mount, ".zarrfs", "commit")
    start = time.perf_counter()
    try:
        fd = os.open(control, os.O_WRONLY)
        try:
            os.write(fd, message.encode() + b"\n")
        finally:
            os.close(fd)
    except OSError as e:
        seconds = time.perf_counter() - start
        try:
            with open(control) as f:
                detail = f.read().strip()
        except OSError:
            detail = ""
        return seconds, f"{e.strerror}: {detail}"
    return time.perf_counter() - start, None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mount")
    p.add_argument("--commits", type=int, required=True)
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--prefix", required=True)
    p.add_argument("--barrier", action="store_true")
    args = p.parse_args()

    buf = bytearray(os.urandom(args.size))
    if args.barrier:
        print("ready", flush=True)
        sys.stdin.readline()

    latencies, errors = [], []
    ok = 0
    n = 0
    start = time.perf_counter()
    for i in range(args.commits):
        directory = os.path.join(args.mount, args.prefix, f"c{i:04d}")
        os.makedirs(directory, exist_ok=True)
        for j in range(args.files):
            buf[:16] = f"{n:016d}".encode()
            n += 1
            fd = os.open(os.path.join(directory, f"f{j:04d}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, buf)
            os.close(fd)
        seconds, error = commit(args.mount, f"{args.prefix} round {i}")
        latencies.append(seconds)
        if error is None:
            ok += 1
        else:
            errors.append(error)
    total = time.perf_counter() - start
    print(json.dumps({
        "seconds": total,
        "ok": ok,
        "failed": len(errors),
        "errors": errors[:5],
        "commit_seconds": latencies,
    }))


if __name__ == "__main__":
    main()
