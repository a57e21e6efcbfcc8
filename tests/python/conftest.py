"""Fixtures for the Zarr tests: a fresh repository and mounts of it that
are always unmounted (and their daemons stopped) when a test ends.

Environment:
  ZARRFS_BIN      the zarrfs binary (required)
  ZARRFS_SCRATCH  a directory for repositories and mountpoints
                  (default: a new temporary directory)
  ZARRFS_TEST_MOUNT_ARGS
                  extra arguments for every mount, split at spaces
                  (scripts/test: --io-uring, for a run over io_uring)
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

BIN = os.environ.get("ZARRFS_BIN")


def _alive(pid):
    """Whether any thread of the process is not yet a zombie: a killed
    process's main thread can be one while the others still exit, holding
    its files and locks."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


def _mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split(" ")[1] == path for line in f)


class Mount:
    """One `zarrfs mount` of a repository."""

    def __init__(self, repo, path, *args):
        os.makedirs(path, exist_ok=True)
        self.path = os.path.realpath(path)
        self.repo = repo
        # scripts/test runs these tests once more with extra mount
        # arguments (over FUSE io_uring queues).
        extra = os.environ.get("ZARRFS_TEST_MOUNT_ARGS", "").split()
        out = subprocess.run(
            [BIN, "mount", repo, self.path, *args, *extra], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"zarrfs mount failed: {out.stdout}{out.stderr}")
        status = self.status()
        self.pid = status["pid"]
        if "--io-uring" in extra and status.get("io_uring") is not True:
            # A run meant to go over the rings must not pass on /dev/fuse.
            self.umount()
            raise RuntimeError("--io-uring asked, but the mount reads /dev/fuse "
                               "(is the fuse module's enable_uring set?)")

    def control_path(self, name):
        return os.path.join(self.path, ".zarrfs", name)

    def read_control(self, name):
        with open(self.control_path(name)) as f:
            return f.read()

    def write_control(self, name, text):
        """One write(2) of `text`; raises OSError with the action's errno."""
        fd = os.open(self.control_path(name), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def status(self):
        return json.loads(self.read_control("status.json"))

    def changed(self):
        """The changed paths, sorted, directories with a trailing '/'."""
        return sorted(
            c["path"] + ("/" if c["is_dir"] else "") for c in self.status()["changes"]
        )

    def commit(self, message):
        self.write_control("commit", message + "\n")
        return self.read_control("commit").strip()

    def checkout(self, target=""):
        self.write_control("checkout", target + "\n")

    def discard(self):
        self.write_control("discard", "\n")

    def umount(self):
        if _mounted(self.path):
            out = subprocess.run([BIN, "umount", self.path], capture_output=True)
            if out.returncode != 0:
                subprocess.run(["umount", "-l", self.path], capture_output=True)
        deadline = time.time() + 20
        while _alive(self.pid) and time.time() < deadline:
            time.sleep(0.01)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)


class Zarrfs:
    """A scratch directory with a repository, and the mounts made of it."""

    def __init__(self, scratch):
        self.dir = scratch
        self.repo = os.path.join(scratch, "repo")
        subprocess.run([BIN, "init", self.repo], check=True, capture_output=True)
        self.mounts = []

    def mount(self, name, *args):
        mount = Mount(self.repo, os.path.join(self.dir, name), *args)
        self.mounts.append(mount)
        return mount

    def close(self):
        for mount in reversed(self.mounts):
            try:
                mount.umount()
            except Exception as e:  # keep unmounting the others
                print(f"unmounting {mount.path}: {e}")


@pytest.fixture
def zarrfs(request):
    if not BIN:
        pytest.fail("set ZARRFS_BIN to the zarrfs binary")
    base = os.environ.get("ZARRFS_SCRATCH") or None
    if base:
        os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="zarrfs-py-", dir=base)
    fs = Zarrfs(scratch)
    yield fs
    fs.close()
    if not any(_mounted(m.path) for m in fs.mounts):
        shutil.rmtree(scratch, ignore_errors=True)
