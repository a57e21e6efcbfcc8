#!/usr/bin/env python3
"""The zarrfs benchmark driver; `scripts/bench` runs it (see its --help).

Each workload runs against zarrfs and against its reference in the same
run, on the same filesystem (everything lives under --dir), and adds rows
to one table: workload, zarrfs time, reference time, rates, ratio,
target, result. Targets are those of issue 5. A missed target is reported
(MISSED) but is not an error: the exit status is 0 unless the benchmark
itself broke (a workload raised, a mount failed), so that `--quick` in CI
proves the script still works.

Every mount is made with `zarrfs mount` and unmounted with `zarrfs umount`
(fallback `umount -l`, then the daemon is killed), also when the run is
interrupted; the scratch directory is deleted at the end. The mounts and
daemon pids are also written to $BENCH_STATE, so that scripts/bench can
clean up even if this process is killed.

Helpers, all in this directory:
  files.py      open/write/close and open/read/close of many files (W1-W4)
  committer.py  write files and commit in a loop through a mount (W5, W6)
  zarr_e2e.py   zarr-python 3 write/read on plain, zarrfs, Icechunk (W7)
  guest_memory.py  keeps a VM's memory with the guest for a full run
and the driver's own parts:
  workloads.py  the workloads, as methods of Bench (W1-W7, MEM)
  report.py     the rows of the table and how it prints
  procs.py      daemons, mounts and the machine as the driver sees them
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

import committer  # this folder: the committing of W5 and W6's children too
import guest_memory
import time
from dataclasses import dataclass, asdict

from procs import (HERE, binary_info, cleaned_marker, is_fuse_mount, loadavg, machine, stop_daemon,
                   wait_for_deletions_to_settle)
from report import Abort, KiB, MiB, Row, fmt_rate, fmt_s, print_table
from workloads import Workloads



# ---------------------------------------------------------------- sizes --

@dataclass
class Sizes:
    """Workload sizes. Full sizes are those of issue 5; --quick divides
    them by about 100."""

    reps: int = 3                 # repetitions of W2 (median kept)
    # W3's cold reads of W1's files swing with what the host caches of
    # the disk: in 28 pairs of reads of them, each side took 0.36-0.92 s,
    # the one fast when the other was slow (README); five pairs keep the
    # median off one such swing
    w3_reps: int = 5
    # W1's writes take 0.2-0.3 s, and one repetition in three took half
    # as long again on either side (0.39 s against 0.23 s through the
    # mount, 0.50 s against 0.20 s on the plain directory): five keep
    # one such from being the median
    w1_reps: int = 5
    w1_files: int = 1024          # W1: files of 1 MiB, one directory
    w1_size: int = MiB
    w2_dirs: int = 100            # W2: dirs x files of 4 KiB
    w2_per_dir: int = 1000
    w2_size: int = 4 * KiB
    w4b_dirs: int = 1000          # W4b: the big repository, dirs x files
    w4b_per_dir: int = 1000
    w4b_batches: int = 10         # ... built in this many commits
    w4b_size: int = 64
    w4b_reps: int = 5             # 1-file commits measured (median kept)
    w4b_budget: float = 600.0     # seconds; building stops early past this
    w5_commits: int = 100         # W5: commits by the other mount ...
    w5_files: int = 1000          # ... of this many files each
    w5_rebasers: int = 3          # mounts that each make one rebasing commit
    w6_mounts: int = 8
    w6_commits: int = 50
    w7_big: tuple = ((16384, 16384), (512, 512))     # 1 GiB in 1 MiB chunks
    # Cold reads of the 1 MiB-chunk array take 0.42-0.55 s on either side,
    # and two pairs of them landed at 0.89 and 1.00 in two runs an hour
    # apart (README): rounds of reads in both orders, the median kept
    w7_big_read_rounds: int = 3
    w7_small: tuple = ((3200, 32000), (32, 32))      # 100,000 chunks of 4 KiB


QUICK = Sizes(
    reps=1,
    w1_reps=1,
    w3_reps=1,
    w7_big_read_rounds=1,
    w1_files=10,
    w2_dirs=10,
    w2_per_dir=100,
    w4b_dirs=100,
    w4b_per_dir=100,
    w4b_batches=2,
    w4b_reps=3,
    w4b_budget=30.0,
    w5_commits=10,
    w5_files=100,
    w5_rebasers=1,
    w6_mounts=4,
    w6_commits=5,
    w7_big=((2048, 2048), (512, 512)),      # 16 MiB in 1 MiB chunks
    w7_small=((320, 3200), (32, 32)),       # 1,000 chunks of 4 KiB
)



# ----------------------------------------------------------------- bench --

class Bench(Workloads):
    def __init__(self, args, sizes):
        self.args = args
        self.sizes = sizes
        self.zarrfs = args.zarrfs
        self.py = sys.executable
        self.venv_py = args.venv_python
        self.rows: list[Row] = []
        self.details: list[str] = []
        self.mounts: dict[str, int | None] = {}   # mountpoint -> daemon pid
        self.procs: set[subprocess.Popen] = set()
        self.can_drop = os.geteuid() == 0
        self.passthrough = None   # as the first mount's status.json says
        self.io_uring = None      # likewise
        self.hwm = 0.0            # daemon VmHWM seen during the current phase, MiB
        self.params_to_put_back: dict[str, str] = {}   # kernel parameter -> its value before
        base = os.path.abspath(args.dir)
        self.made_base = not os.path.exists(base)
        os.makedirs(base, exist_ok=True)
        self.base = base
        if not args.quick:
            wait_for_deletions_to_settle(base)
        self.scratch = os.path.join(base, f"run.{os.getpid()}")
        os.makedirs(self.scratch)
        self.save_state()
        # A private copy of the binary: a rebuild during the run (others
        # work in the same checkout) must not change what is measured.
        self.zarrfs = os.path.join(self.scratch, "zarrfs")
        shutil.copy2(args.zarrfs, self.zarrfs)
        self.fuse_floor = None
        if args.fuse_floor:
            self.fuse_floor = os.path.join(self.scratch, "fuse_floor")
            shutil.copy2(args.fuse_floor, self.fuse_floor)
        self.floors: dict[str, subprocess.Popen] = {}   # FUSE floor mountpoint -> its process

    # ---- bookkeeping for scripts/bench's last-resort cleanup --

    def save_state(self):
        path = os.environ.get("BENCH_STATE")
        if not path:
            return
        lines = [f"scratch {self.scratch}"]
        if self.made_base:
            lines.append(f"base {self.base}")
        for mp, pid in self.mounts.items():
            lines.append(f"mount {mp}")
            if pid:
                lines.append(f"pid {pid}")
        for proc in self.procs:
            lines.append(f"helper {proc.pid}")
        for param, value in self.params_to_put_back.items():
            lines.append(f"param {param} {value}")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)

    def note(self, text):
        self.details.append(text)
        print(f"   {text}", flush=True)

    def say(self, text):
        print(f"== {text}", flush=True)

    # ---- processes --

    def run(self, argv, *, timeout=3600):
        """Run a helper; return its last stdout line parsed as JSON (or the
        whole stdout if it is not JSON)."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.add(proc)
        self.save_state()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise Abort(f"{' '.join(argv[:3])}... timed out after {timeout}s")
        finally:
            self.procs.discard(proc)
        if proc.returncode != 0:
            raise Abort(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()[-2000:]}")
        lines = out.strip().splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            return out

    def files(self, op, root, *, dirs, per_dir, size, first_dir=0):
        return self.run([self.py, os.path.join(HERE, "files.py"), op, root,
                         "--dirs", str(dirs), "--per-dir", str(per_dir),
                         "--size", str(size), "--first-dir", str(first_dir)])

    # ---- zarrfs --

    def zcmd(self, *argv, check=True, timeout=300):
        r = subprocess.run([self.zarrfs, *argv], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise Abort(f"zarrfs {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def init_repo(self, name):
        path = os.path.join(self.scratch, name)
        self.zcmd("init", path)
        return path

    def mount(self, repo, mp):
        """Mount `repo` at `mp` with a new session; return the daemon pid."""
        os.makedirs(mp, exist_ok=True)
        self.mounts[mp] = None
        self.save_state()
        uring = ["--io-uring"] if self.args.io_uring == "on" else []
        self.zcmd("mount", repo, mp, "--new-session", "--author", "bench <bench@zarrfs>", *uring)
        with open(os.path.join(mp, ".zarrfs", "status.json")) as f:
            status = json.load(f)
        pid = status["pid"]
        if self.passthrough is None:
            self.passthrough = status.get("passthrough", "not reported")
            self.io_uring = status.get("io_uring", "not reported")
        self.mounts[mp] = pid
        self.save_state()
        return pid

    def umount(self, mp):
        pid = self.mounts.get(mp)
        r = self.zcmd("umount", mp, check=False, timeout=120)
        if r.returncode != 0:
            print(f"   zarrfs umount {mp} failed: {r.stderr.strip()}; detaching", file=sys.stderr)
            lazy = ["umount", "-l", mp] if os.geteuid() == 0 else ["fusermount3", "-uz", mp]
            subprocess.run(lazy, capture_output=True)
        if pid:
            stop_daemon(pid)
        self.mounts.pop(mp, None)
        self.save_state()

    def mount_floor(self, mp):
        """Mount the FUSE floor (bench.d/fuse_floor.rs) at `mp`, mirroring
        a directory of its own beside it; None, with a note, if it
        cannot run here (no binary, no FUSE passthrough)."""
        if not self.fuse_floor:
            self.note("FUSE floor: no fuse_floor binary (see scripts/bench output)")
            return None
        backing = mp + "-backing"
        os.makedirs(backing)
        os.makedirs(mp)
        self.mounts[mp] = None
        proc = subprocess.Popen([self.fuse_floor, backing, mp], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.floors[mp] = proc
        self.procs.add(proc)
        self.save_state()
        deadline = time.monotonic() + 10
        while not is_fuse_mount(mp):
            if proc.poll() is not None or time.monotonic() > deadline:
                error = proc.stderr.read().strip() if proc.poll() is not None else "timed out"
                self.umount_floor(mp)
                self.note(f"FUSE floor: fuse_floor did not mount ({error[-300:]})")
                return None
            time.sleep(0.02)
        return mp

    def umount_floor(self, mp):
        proc = self.floors.pop(mp)
        if is_fuse_mount(mp):
            subprocess.run(["umount", mp] if os.geteuid() == 0 else ["fusermount3", "-u", mp],
                           capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            subprocess.run(["umount", "-l", mp], capture_output=True)
            proc.kill()
            proc.wait()
        self.procs.discard(proc)
        self.mounts.pop(mp, None)
        self.save_state()

    def cleanup(self):
        for mp in list(self.floors):
            try:
                self.umount_floor(mp)
            except Exception as e:
                print(f"   cleanup of {mp}: {e}", file=sys.stderr)
        for proc in list(self.procs):
            try:
                proc.kill()
                proc.wait(timeout=10)
            except Exception:
                pass
        for mp in list(self.mounts):
            try:
                self.umount(mp)
            except Exception as e:
                print(f"   cleanup of {mp}: {e}", file=sys.stderr)
        if self.args.keep:
            print(f"   --keep: scratch data left in {self.scratch}")
            return
        shutil.rmtree(self.scratch, ignore_errors=True)
        if not self.args.quick:  # a quick run deletes too few files to matter
            try:
                with open(cleaned_marker(self.base), "w"):
                    pass
            except OSError:
                pass
        if self.made_base:
            try:
                os.rmdir(self.base)
            except OSError:
                pass

    # ---- measuring --

    def commit(self, mp, message):
        """Commit as `echo message > MP/.zarrfs/commit` does (open, one
        write, close); return seconds. Raises Abort on failure."""
        seconds, error = committer.commit(mp, message)
        if error is not None:
            raise Abort(f"commit in {mp} failed: {error}")
        return seconds

    def drop_caches(self):
        os.sync()
        if self.can_drop:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def log_count(self, repo):
        r = self.zcmd("log", "--repo", repo, "--json")
        return len(json.loads(r.stdout))

    # ---- table rows --

    def ratio_row(self, name, z, ref, amount, unit, target, reference, note=""):
        """A throughput comparison: `amount` units done in z and ref seconds;
        passes if zarrfs's rate is at least `target` times the reference's."""
        zr, rr = amount / z, amount / ref
        ratio = zr / rr
        self.rows.append(Row(name, z, ref, fmt_rate(zr, unit), fmt_rate(rr, unit), ratio,
                             f">= {target:.2f}" if target else "", (ratio >= target) if target else None,
                             reference, note))

    def floor_row(self, name, z, floor, plain, amount, unit, note):
        """zarrfs against the FUSE floor (no target), and the floor
        against the plain directory in the note: what FUSE itself costs
        here, and what zarrfs costs beyond it."""
        self.ratio_row(f"{name} vs FUSE floor", z, floor, amount, unit, None,
                       "fuse_floor: a FUSE mount mirroring a plain directory, no versioning",
                       f"{note}; the floor itself: {plain / floor:.2f} of the plain dir")

    def max_time_row(self, name, z, limit, note="", ref=None, reference=""):
        self.rows.append(Row(name, z, ref, "", "", None, f"<= {fmt_s(limit)}",
                             z <= limit, reference, note))

    def memory_row(self, name, mib, limit=256):
        self.rows.append(Row(name, zarrfs_rate=f"{mib:.0f} MiB", target=f"< {limit} MiB VmHWM",
                             passed=mib < limit))

    def error_row(self, name, error):
        self.rows.append(Row(name, error=error))




WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7"]


def main():
    p = argparse.ArgumentParser(prog="scripts/bench", description="Benchmark zarrfs against plain "
                                "directories and Icechunk (issue 5).")
    p.add_argument("--quick", action="store_true", help="sizes divided by ~100 (< 2 min)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--dir", default="target/bench", help="scratch directory (deleted at the end)")
    p.add_argument("--only", metavar="LIST", help="comma-separated workloads (W1..W7); "
                   "W1, W2, W3 and W4a run together")
    p.add_argument("--keep", action="store_true", help="keep the scratch data (for debugging)")
    p.add_argument("--io-uring", choices=["on", "off"],
                   help="on: mount with --io-uring, the fuse module's enable_uring parameter set "
                   "for the run (root; put back after); off: without, the parameter unset "
                   "(default: without, the parameter as the machine has it)")
    p.add_argument("--guest-memory", choices=["keep", "as-is"],
                   help="keep (default for full runs): turn a VM's free page reporting off for the "
                   "run and touch the free memory once (guest_memory.py; root; put back after); "
                   "as-is (default with --quick): leave it as the machine has it")
    p.add_argument("--zarrfs", required=True, help=argparse.SUPPRESS)
    p.add_argument("--venv-python", default="", help=argparse.SUPPRESS)
    p.add_argument("--fuse-floor", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = QUICK if args.quick else Sizes()
    only = set(WORKLOADS if not args.only else [w.strip().upper() for w in args.only.split(",")])
    if only - set(WORKLOADS):
        p.error(f"unknown workloads {sorted(only - set(WORKLOADS))}")

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    return run(args, sizes, only)


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def set_enable_uring(value):
    """Set the fuse module's enable_uring parameter ("on" or "off");
    return what it was."""
    try:
        with open(ENABLE_URING) as f:
            before = f.read().strip()
        with open(ENABLE_URING, "w") as f:
            f.write({"on": "Y", "off": "N"}.get(value, value))
    except OSError as e:
        sys.exit(f"scripts/bench: --io-uring: cannot set {ENABLE_URING}: {e} "
                 "(it needs root and a kernel with FUSE over io_uring, Linux 6.14+)")
    return before


def run(args, sizes, only):
    bench = Bench(args, sizes)
    info = machine(bench.scratch)
    print(f"zarrfs benchmark ({'quick' if args.quick else 'full'} sizes)")
    for k in ("nproc", "memory", "cpu", "kernel", "dir_fs", "dir"):
        print(f"  {k:8} {info.get(k, '?')}")
    info["zarrfs"] = binary_info(args.zarrfs)
    print(f"  zarrfs   {info['zarrfs']}")
    print(f"  load     {open('/proc/loadavg').read().strip()} (load average; other work on the machine skews results)")
    if not bench.can_drop:
        print("  note     not root: the page cache cannot be dropped before reads (W3, W7 reads are warm)")
    try:
        if args.io_uring:
            # Put back in the finally below, or by scripts/bench's cleanup
            # if this process dies.
            bench.params_to_put_back[ENABLE_URING] = set_enable_uring(args.io_uring)
            bench.save_state()
        keep_guest_memory(args, bench, info)
        print(flush=True)
        return run_workloads(args, bench, info, only)
    finally:
        for param, value in bench.params_to_put_back.items():
            with open(param, "w") as f:
                f.write(value)
        bench.params_to_put_back.clear()
        bench.save_state()


def keep_guest_memory(args, bench, info):
    """--guest-memory keep: see guest_memory.py; the parameter goes back
    in run(), or in scripts/bench's cleanup if this process dies."""
    if (args.guest_memory or ("as-is" if args.quick else "keep")) == "as-is":
        info["guest_memory"] = "as the machine has it"
    else:
        before, why = guest_memory.keep_with_guest()
        if before is None:
            info["guest_memory"] = why
        else:
            bench.params_to_put_back[guest_memory.ORDER] = before
            bench.save_state()
            gib, seconds = guest_memory.touch_free_memory()
            info["guest_memory"] = (f"kept with the guest (free page reporting off for the run; "
                                    f"{gib:.1f} GiB of free memory touched first, in {seconds:.0f} s)")
    print(f"  guest    {info['guest_memory']}")


def run_workloads(args, bench, info, only):
    started = time.time()
    broken = False
    plan = []
    if only & {"W1", "W2", "W3", "W4"}:
        plan.append(("W1-W3, W4a", bench.files_workloads))
    if "W4" in only:
        plan.append(("W4b", bench.w4b))
    for w, fn in (("W5", bench.w5), ("W6", bench.w6), ("W7", bench.w7)):
        if w in only:
            plan.append((w, fn))
    try:
        for name, fn in plan:
            t0 = time.time()
            load0 = loadavg()
            try:
                fn()
            except Abort as e:
                broken = True
                print(f"   {name}: ERROR: {e}", file=sys.stderr)
                bench.error_row(name, str(e))
            for mp in list(bench.mounts):
                bench.umount(mp)
            # Data is deleted only at the very end: on ext4 without a
            # journal, creating files is much slower for minutes after a
            # mass deletion (find_inode_bit skips recently deleted inodes).
            bench.note(f"({name} took {time.time() - t0:.0f} s, load average {load0} at its start, "
                       f"{loadavg()} at its end)")
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        bench.cleanup()
        return 130
    finally:
        if bench.mounts or os.path.exists(bench.scratch):
            bench.cleanup()

    info["passthrough"] = bench.passthrough
    info["io_uring"] = bench.io_uring
    print(f"\nResults ({'quick' if args.quick else 'full'} sizes, {time.time() - started:.0f} s; "
          f"FUSE passthrough: {bench.passthrough}; FUSE over io_uring: {bench.io_uring}; "
          f"VM memory: {info['guest_memory']}):\n")
    print_table(bench.rows)
    missed = [r.workload for r in bench.rows if r.passed is False]
    print()
    if missed:
        print(f"MISSED {len(missed)} target(s): " + "; ".join(missed))
    else:
        print("All measured targets met.")
    if broken:
        print("ERROR: some workloads could not run (see above)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": args.quick, "machine": info, "rows": [asdict(r) for r in bench.rows],
                       "details": bench.details, "missed": missed, "broken": broken}, f, indent=2)
        print(f"Results written to {args.json}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
