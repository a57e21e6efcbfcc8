"""Keep a virtual machine's memory with the guest for a benchmark run.

On a VM with a virtio balloon that reports free pages (Firecracker's, and
this project's VMs), the guest hands every 2 MiB block that stays free for
a moment back to the host, and the next program that gets it waits for the
host to hand it out again. A write of 1 GiB through zarr-python then takes
0.8 s or 2.3 s on the same plain directory, depending on how much of its
memory came back from the host, and its CPU time 1.2 s or 3.4 s: that
tax, not the store, decided most ratios of earlier full runs (issue 5).

So a full run turns free page reporting off for its duration (the
page_reporting module's order set beyond the largest page order, which
reports nothing), touches the free memory once so that every page is the
guest's again, and puts the order back at the end. Where the parameter is
missing, or the kernel refuses the value, the run goes on as the machine
is and says so.
"""

import mmap
import os
import subprocess
import sys
import time

ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"

# Above MAX_PAGE_ORDER (10 on x86-64 and arm64): no free block is that
# large, so none is reported. Kernels that check the bound refuse it.
BEYOND_LARGEST_ORDER = "11"

# Left untouched when the free memory is touched, so that nothing else on
# the machine is pushed out.
MARGIN = 1 << 30


def keep_with_guest():
    """Turn free page reporting off. Returns (value to put back, None), or
    (None, why it stays on)."""
    if not os.path.exists(ORDER):
        return None, "no free page reporting on this machine"
    try:
        with open(ORDER) as f:
            before = f.read().strip()
        with open(ORDER, "w") as f:
            f.write(BEYOND_LARGEST_ORDER)
    except OSError as e:
        return None, f"free page reporting stays on: cannot set {ORDER}: {e}"
    return before, None


def touch_free_memory():
    """Fault in all free memory but MARGIN once, in a child process, so
    that the host backs every page the run will get; return (GiB touched,
    seconds)."""
    free = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemFree:"):
                free = int(line.split()[1]) * 1024
    size = max(0, free - MARGIN) // mmap.PAGESIZE * mmap.PAGESIZE
    if size == 0:
        return 0.0, 0.0
    start = time.monotonic()
    subprocess.run([sys.executable, __file__, str(size)], check=True)
    return size / (1 << 30), time.monotonic() - start


if __name__ == "__main__":
    # The child: map and populate, then exit, which frees it all.
    size = int(sys.argv[1])
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    region = mmap.mmap(-1, size, flags=flags)
    if not getattr(mmap, "MAP_POPULATE", 0):
        for offset in range(0, size, mmap.PAGESIZE):
            region[offset] = 1
    region.close()
