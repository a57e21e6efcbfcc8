"""The benchmark's view of processes, mounts and the machine: a daemon's
memory and CPU time, whether a path is a FUSE mount, stopping a daemon,
what machine and binary a run measured, and waiting for ext4 to settle
after a mass deletion."""

import os
import platform
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# ext4 without a journal (this project's VMs) will not reuse a freed inode
# for 5 minutes after its deletion while its inode table block is dirty,
# and creating a file in the block group scans past every such inode, with
# new files dirtying the blocks again (fs/ext4/ialloc.c, recently_deleted,
# RECENTCY_DIRTY). 20,000 files of 4 KiB took 12.5 s to create 4 minutes
# after a full run's scratch (1.2 million files) was deleted, 0.54 s on a
# settled filesystem; W2's plain side took 26-35 s instead of 3 s.
DELETIONS_SETTLE = 305


def cleaned_marker(base):
    """A file beside the scratch base (which a run may remove) whose
    mtime says when a run last deleted its scratch."""
    parent, name = os.path.split(os.path.normpath(base))
    return os.path.join(parent, f".{name}-cleaned")


def wait_for_deletions_to_settle(base):
    """Wait until a previous run's deletion of its scratch can no longer
    slow this run's file creation down (see DELETIONS_SETTLE)."""
    try:
        since = time.time() - os.path.getmtime(cleaned_marker(base))
    except OSError:
        return
    if since < DELETIONS_SETTLE:
        wait = DELETIONS_SETTLE - since
        print(f"== waiting {wait:.0f} s: the previous run deleted its scratch {since:.0f} s ago, "
              "and ext4 creates files slowly for 5 minutes after a mass deletion", file=sys.stderr)
        time.sleep(wait)


def read_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def loadavg():
    """The 1-minute load average: above what the benchmark itself runs
    (about 1-2 busy processes), something else was using the machine."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def hwm_mib(pid):
    """The daemon's peak resident memory (VmHWM) so far, MiB."""
    value = read_status(pid).get("VmHWM", "0 kB").split()[0]
    return int(value) / 1024


def cpu_seconds(pid):
    """User + system CPU time of a process and its threads so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def is_daemon(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(a.endswith(b"zarrfs") for a in argv[:1]) and b"--foreground" in argv


def is_fuse_mount(path):
    """Whether a FUSE filesystem is mounted at `path` (/proc/mounts
    escapes spaces and the like as octal)."""
    path = os.path.abspath(path)
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2].startswith("fuse"):
                where = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
                if where == path:
                    return True
    return False


def stop_daemon(pid, wait=30.0):
    """Wait for a daemon to exit after its unmount; kill it if it does not."""
    deadline = time.monotonic() + wait
    while is_daemon(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_daemon(pid):
            return
        print(f"   daemon {pid} still running: {sig.name}", file=sys.stderr)
        os.kill(pid, sig)
        time.sleep(2)


def machine(dirpath):
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    r = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", dirpath],
                       capture_output=True, text=True)
    info["dir_fs"] = " ".join(r.stdout.split()) or "unknown"
    fields = r.stdout.split()
    if len(fields) >= 2 and fields[0] == "ext4":
        try:
            with open(f"/sys/fs/ext4/{os.path.basename(fields[1])}/journal_task") as f:
                if f.read().strip() == "<none>":
                    info["dir_fs"] += " (no journal)"
        except OSError:
            pass
    info["dir"] = dirpath
    return info


def binary_info(path):
    """The binary, when it was built, and the checkout's revision."""
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=HERE).stdout.strip() or "?"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True, cwd=HERE).stdout.strip()
    return f"{path} (built {built}; checkout at {rev}{', with uncommitted changes in src/' if dirty else ''})"
