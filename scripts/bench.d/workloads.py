"""The workloads of the benchmark (issue 5), as methods of `bench.Bench`
(which mixes this class in): each runs zarrfs and its reference and adds
rows to the table. The mounts, commands and rows they use are Bench's."""

import json
import os
import subprocess
import time

from procs import HERE, cpu_seconds, hwm_mib
from report import Abort, KiB, MiB, Row, fmt_rate, median


class Workloads:
    def files_workloads(self):
        """W1, W2, W3, W4a and the daemon's memory during W2/W4a.

        W1 large files: 1,024 files of 1 MiB (one directory) written with
          1 MiB write(2)s through the mount vs into a plain directory
          (open/write/close; close included; no commit, no fsync), and
          through the FUSE floor (mount_floor) as a third side in turn.
        W2 small files: 100,000 files of 4 KiB in 100 directories of
          1,000, the same way (the floor too).
        W4a: the commit of W2's 100,000 new files: each W2 repetition
          writes a new directory tree and commits it at once (no sync
          before: the commit makes the new files' data durable, as it
          would for a user). Its reference is the floor of any durable
          commit: sync(2) right after the plain side's W2 writes.
        W3 reads: W1's and W2's files read back after a fresh mount, vs
          the plain directory; page cache dropped before each side.
        W2 runs `reps` times, W1 `w1_reps` and W3 `w3_reps` times (see
        Sizes), alternating which side goes
        first; the median time of each side is kept. Before each write
        run, sync, so that neither side pays the other's writeback.
        (Nothing is deleted until the very end: on ext4 without a journal,
        creating files is several times slower for minutes after a mass
        deletion, see find_inode_bit/recently_deleted.)
        """
        s = self.sizes
        repo = self.init_repo("files-repo")
        plain = os.path.join(self.scratch, "plain")
        mp = os.path.join(self.scratch, "mnt-files")
        os.makedirs(plain)

        def sides(rep, floor=None):
            """Each side in turn first: plain and zarrfs alternating, the
            floor (if any) going round with them."""
            order = [("plain", plain), ("zarrfs", mp)] + ([("floor", floor)] if floor else [])
            if not floor:
                return order if rep % 2 == 0 else order[::-1]
            return order[rep % 3:] + order[:rep % 3]

        def write_reps(key, reps, dirs, per_dir, size, pid, floor=None):
            """Write `reps` trees on each side; commit each zarrfs tree
            right after writing it (its data still dirty, as a user's
            commit finds it). Returns times per side and commit times."""
            times = {"plain": [], "zarrfs": [], "floor": []}
            commits = []
            syncs = []
            for rep in range(reps):
                for side, root in sides(rep, floor):
                    os.sync()
                    cpu0 = cpu_seconds(pid)
                    r = self.files("write", os.path.join(root, f"{key}_r{rep}"),
                                   dirs=dirs, per_dir=per_dir, size=size)
                    times[side].append(r["seconds"])
                    if side == "floor":
                        self.note(f"{key.upper()} rep {rep} FUSE floor: {r['seconds']:.3f} s")
                        continue
                    if side == "plain":
                        t0 = time.perf_counter()
                        os.sync()
                        syncs.append(time.perf_counter() - t0)
                        self.note(f"{key.upper()} rep {rep} plain: {r['seconds']:.3f} s, "
                                  f"then sync: {syncs[-1]:.3f} s")
                        continue
                    cpu1 = cpu_seconds(pid)
                    self.hwm = max(self.hwm, hwm_mib(pid))
                    t = self.commit(mp, f"{key} rep {rep}")
                    commits.append(t)
                    self.note(f"{key.upper()} rep {rep} zarrfs: {r['seconds']:.3f} s, daemon CPU "
                              f"{cpu1 - cpu0:.2f} s; then commit of {r['files']} files: {t:.3f} s, "
                              f"daemon CPU {cpu_seconds(pid) - cpu1:.2f} s")
            return times, commits, syncs

        # -- W1: a daemon of its own.
        self.say(f"W1: {s.w1_files} files of {s.w1_size // KiB} KiB, {s.w1_reps} repetition(s)")
        pid = self.mount(repo, mp)
        floor = self.mount_floor(os.path.join(self.scratch, "mnt-floor"))
        self.hwm = 0.0
        w1, _, _ = write_reps("w1", s.w1_reps, 1, s.w1_files, s.w1_size, pid, floor)
        self.note(f"daemon VmHWM after W1: {hwm_mib(pid):.0f} MiB")
        self.umount(mp)
        if floor:
            self.umount_floor(floor)
        w1_bytes = s.w1_files * s.w1_size
        self.ratio_row(f"W1 write {s.w1_files} x {s.w1_size // KiB} KiB", median(w1["zarrfs"]),
                       median(w1["plain"]), w1_bytes / MiB, "MiB/s", 0.85, "plain dir, same writer")
        if floor:
            self.floor_row("W1 write", median(w1["zarrfs"]), median(w1["floor"]),
                           median(w1["plain"]), w1_bytes / MiB, "MiB/s", "same writer")

        # -- W2 + W4a: a fresh daemon, so that its VmHWM covers W2 and W4a only.
        n2 = s.w2_dirs * s.w2_per_dir
        self.say(f"W2/W4a: {n2} files of {s.w2_size // KiB} KiB in {s.w2_dirs} dirs, {s.reps} repetition(s)")
        pid = self.mount(repo, mp)
        floor = self.mount_floor(os.path.join(self.scratch, "mnt-floor-w2"))
        self.hwm = 0.0
        w2, w4a, w2_syncs = write_reps("w2", s.reps, s.w2_dirs, s.w2_per_dir, s.w2_size, pid, floor)
        hwm_w2 = self.hwm
        hwm_w4a = hwm_mib(pid)
        self.umount(mp)
        if floor:
            self.umount_floor(floor)
        self.ratio_row(f"W2 write {n2} x {s.w2_size // KiB} KiB", median(w2["zarrfs"]),
                       median(w2["plain"]), n2, "files/s", 0.30, "plain dir, same writer")
        if floor:
            self.floor_row("W2 write", median(w2["zarrfs"]), median(w2["floor"]),
                           median(w2["plain"]), n2, "files/s", "same writer")

        # -- W3: read the last repetition's trees after a fresh mount.
        self.say(f"W3: read W1 and W2 back, {s.w3_reps} repetition(s)")
        last = {"w1": s.w1_reps - 1, "w2": s.reps - 1}
        w3 = {k: {"plain": [], "zarrfs": []} for k in ("w1", "w2")}
        for rep in range(s.w3_reps):
            pid = self.mount(repo, mp)
            for side, root in sides(rep):
                for key, dirs, per_dir, size in (("w1", 1, s.w1_files, s.w1_size),
                                                 ("w2", s.w2_dirs, s.w2_per_dir, s.w2_size)):
                    self.drop_caches()
                    cpu0 = cpu_seconds(pid)
                    r = self.files("read", os.path.join(root, f"{key}_r{last[key]}"),
                                   dirs=dirs, per_dir=per_dir, size=size)
                    w3[key][side].append(r["seconds"])
                    extra = f", daemon CPU {cpu_seconds(pid) - cpu0:.2f} s" if side == "zarrfs" else ""
                    self.note(f"W3 rep {rep} {key} {side}: {r['seconds']:.3f} s{extra}")
            self.umount(mp)
        self.ratio_row(f"W3 read W1 ({s.w1_files} x {s.w1_size // KiB} KiB)", median(w3["w1"]["zarrfs"]),
                       median(w3["w1"]["plain"]), w1_bytes / MiB, "MiB/s", 0.90,
                       "plain dir; fresh mount, caches dropped")
        self.ratio_row(f"W3 read W2 ({n2} x {s.w2_size // KiB} KiB)", median(w3["w2"]["zarrfs"]),
                       median(w3["w2"]["plain"]), n2, "files/s", 0.90,
                       "plain dir; fresh mount, caches dropped")
        self.max_time_row(f"W4a commit {n2} new files", median(w4a), 0.25,
                          note="median of " + ", ".join(f"{t:.3f}" for t in w4a)
                          + " s; each right after its files were written, no sync before",
                          ref=median(w2_syncs),
                          reference="sync(2) right after the plain dir's W2 writes")
        self.memory_row("MEM daemon, W2 writes", hwm_w2)
        self.memory_row("MEM daemon, W2 writes + W4a commits", hwm_w4a)

    # ============================================================== W4b --

    def w4b(self):
        """W4b: commit 1 changed file in a repository of 1,000,000 files.

        The repository is built through a mount: 1,000 directories of
        1,000 files of 64 bytes, written with files.py and committed in 10
        commits of 100,000 files. If building takes longer than the budget
        (10 min), it stops early and says how many files the repository
        has. Then a fresh mount overwrites one existing file and commits,
        `w4b_reps` times; the median commit time is kept.
        """
        s = self.sizes
        repo = self.init_repo("w4b-repo")
        mp = os.path.join(self.scratch, "mnt-w4b")
        per_batch = s.w4b_dirs // s.w4b_batches
        target_files = s.w4b_dirs * s.w4b_per_dir
        self.say(f"W4b: building a repository of {target_files} files in {s.w4b_batches} commits")
        pid = self.mount(repo, mp)
        start = time.perf_counter()
        files = 0
        for b in range(s.w4b_batches):
            r = self.files("write", os.path.join(mp, "big"), first_dir=b * per_batch,
                           dirs=per_batch, per_dir=s.w4b_per_dir, size=s.w4b_size)
            t = self.commit(mp, f"W4b build {b}")
            files += r["files"]
            self.note(f"W4b build {b}: wrote {r['files']} files in {r['seconds']:.1f} s "
                      f"({r['files'] / r['seconds']:.0f} files/s), commit {t:.3f} s, "
                      f"repository now {files} files")
            if time.perf_counter() - start > s.w4b_budget and b + 1 < s.w4b_batches:
                self.note(f"W4b: CUT: building took over {s.w4b_budget:.0f} s; the repository "
                          f"has {files} files, not {target_files}")
                break
        hwm_build = hwm_mib(pid)
        self.note(f"W4b: built {files} files in {time.perf_counter() - start:.0f} s; daemon VmHWM {hwm_build:.0f} MiB")
        self.umount(mp)

        pid = self.mount(repo, mp)
        victim = os.path.join(mp, "big", f"d{per_batch // 2:04d}", f"f{s.w4b_per_dir // 2:04d}")
        times = []
        for rep in range(s.w4b_reps):
            fd = os.open(victim, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, os.urandom(s.w4b_size))
            os.close(fd)
            times.append(self.commit(mp, f"W4b one file {rep}"))
        hwm_commit = hwm_mib(pid)
        self.umount(mp)
        self.note("W4b: 1-file commits (fresh mount): " + ", ".join(f"{t * 1000:.1f}" for t in times) + " ms")
        self.max_time_row(f"W4b commit 1 file in {files} files", median(times), 0.020,
                          note=f"median of {len(times)}, first {times[0] * 1000:.1f} ms")
        self.memory_row(f"MEM daemon, W4b building {files} files", hwm_build)
        self.memory_row("MEM daemon, W4b 1-file commits", hwm_commit)

    # =============================================================== W5 --

    def w5(self):
        """W5 rebase: commits that must rebase over 100 commits of 1,000
        other paths each.

        Mounts A1..Ak (k = w5_rebasers) start at the same commit and each
        write one 4 KiB file. Then mount B makes 100 commits of 1,000 new
        4 KiB files each (committer.py). Then A1, ..., Ak commit one after
        the other: A1 rebases over B's 100 commits, A2 over those and A1's,
        and so on. The time of each rebasing commit is measured; the median
        is kept. All commits must land.
        """
        s = self.sizes
        repo = self.init_repo("w5-repo")
        self.say(f"W5: {s.w5_rebasers} commit(s) rebasing over {s.w5_commits} commits of {s.w5_files} paths")
        rebasers = []
        for i in range(s.w5_rebasers):
            mp = os.path.join(self.scratch, f"mnt-w5-a{i}")
            self.mount(repo, mp)
            os.makedirs(os.path.join(mp, f"a{i}"))
            with open(os.path.join(mp, f"a{i}", "own"), "wb") as f:
                f.write(os.urandom(4096))
            rebasers.append(mp)
        b = os.path.join(self.scratch, "mnt-w5-b")
        self.mount(repo, b)
        start = time.perf_counter()
        r = self.run([self.py, os.path.join(HERE, "committer.py"), b, "--commits", str(s.w5_commits),
                      "--files", str(s.w5_files), "--size", "4096", "--prefix", "b"])
        if r["failed"]:
            raise Abort(f"W5: the other mount's commits failed: {r['errors']}")
        lat = r["commit_seconds"]
        self.note(f"W5: other mount made {r['ok']} commits of {s.w5_files} files in "
                  f"{time.perf_counter() - start:.1f} s; its commit time median {median(lat) * 1000:.1f} ms, "
                  f"max {max(lat) * 1000:.1f} ms")
        times = []
        for mp in rebasers:
            times.append(self.commit(mp, "W5 rebasing commit"))
        for mp in [*rebasers, b]:
            self.umount(mp)
        count = self.log_count(repo)
        expected = 1 + s.w5_commits + s.w5_rebasers
        self.note("W5: rebasing commits: " + ", ".join(f"{t * 1000:.1f}" for t in times)
                  + f" ms; log has {count} commits (expected {expected})")
        if count != expected:
            raise Abort(f"W5: the log has {count} commits, expected {expected}")
        self.max_time_row(f"W5 rebase over {s.w5_commits} x {s.w5_files} paths", median(times), 0.5,
                          note=f"median of {len(times)}")

    # =============================================================== W6 --

    def w6(self):
        """W6 contention: 8 mounts of one repository, each making 50
        commits of a different new file (write a 4 KiB file, commit,
        repeat), all started together (committer.py --barrier). The time is
        from the start signal until the last one finishes; the rate is the
        commits that landed per second. All 400 must land: every commit
        write must succeed and the branch log must grow by 400."""
        s = self.sizes
        repo = self.init_repo("w6-repo")
        total = s.w6_mounts * s.w6_commits
        self.say(f"W6: {s.w6_mounts} mounts x {s.w6_commits} commits")
        mps = []
        for i in range(s.w6_mounts):
            mp = os.path.join(self.scratch, f"mnt-w6-{i}")
            self.mount(repo, mp)
            mps.append(mp)
        workers = []
        try:
            for i, mp in enumerate(mps):
                p = subprocess.Popen([self.py, os.path.join(HERE, "committer.py"), mp, "--commits",
                                      str(s.w6_commits), "--files", "1", "--size", "4096",
                                      "--prefix", f"m{i}", "--barrier"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.procs.add(p)
                workers.append(p)
            self.save_state()
            for p in workers:
                if p.stdout.readline().strip() != "ready":
                    raise Abort("W6: a committer did not start")
            start = time.perf_counter()
            for p in workers:
                p.stdin.write("go\n")
                p.stdin.flush()
            results = []
            for p in workers:
                out, _ = p.communicate(timeout=3600)
                if p.returncode != 0:
                    raise Abort(f"W6: a committer failed ({p.returncode})")
                results.append(json.loads(out.strip().splitlines()[-1]))
            seconds = time.perf_counter() - start
        finally:
            for p in workers:
                self.procs.discard(p)
                if p.poll() is None:
                    p.kill()
        for mp in mps:
            self.umount(mp)
        ok = sum(r["ok"] for r in results)
        failed = sum(r["failed"] for r in results)
        lat = sorted(t for r in results for t in r["commit_seconds"])
        count = self.log_count(repo) - 1
        self.note(f"W6: {ok} commits ok, {failed} failed, log grew by {count}, in {seconds:.2f} s; "
                  f"commit latency median {median(lat) * 1000:.1f} ms, "
                  f"p90 {lat[int(len(lat) * 0.9)] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        for r in results:
            for e in r["errors"]:
                self.note(f"W6 error: {e}")
        rate = count / seconds
        landed = ok == total and count == total
        self.rows.append(Row(f"W6 {s.w6_mounts} mounts x {s.w6_commits} commits", seconds, None,
                             fmt_rate(rate, "commits/s"), "", None, ">= 100 commits/s, all land",
                             landed and rate >= 100, "",
                             f"{count}/{total} landed" + ("" if landed else " -- COMMITS LOST OR FAILED")))

    # =============================================================== W7 --

    def w7(self):
        """W7 Zarr end to end: zarr-python 3 writes then reads a float32
        array of 1 GiB in 1 MiB chunks, and one of 100,000 chunks of 4 KiB,
        (a) through a zarrfs mount (LocalStore on the mountpoint; the
        write includes the commit), (b) with LocalStore on a plain
        directory, (c) with Icechunk on local storage (the write includes
        session.commit). Each store writes the array twice, as two arrays
        (order A B C C B A, sync before each), and reads the first twice
        (the same order, page cache dropped before each), the 1 MiB-chunk
        array in `w7_big_read_rounds` such rounds; the median of each is
        kept (of two, their mean). The order matters on a VM: a writer
        that gets memory the guest never touched before pays for the host
        handing it out. The
        notes give each write's CPU time, the writer's and the daemon's:
        on a machine of few CPUs, what the daemon uses the writer lacks.
        For the 1 MiB chunks, the plain directory and Icechunk also write
        twice more each ending with syncfs(2) (zarr_e2e.py --durable),
        rows without a target: a zarrfs commit leaves the data on the
        disk, and these say what that costs the others. Both arrays are
        also written twice with LocalStore on the FUSE floor (see
        mount_floor), a row without a target.
        See zarr_e2e.py for what exactly is timed."""
        s = self.sizes
        if not self.venv_py:
            self.error_row("W7 Zarr end to end", "no Python environment with zarr (see scripts/bench output)")
            return
        has_icechunk = subprocess.run([self.venv_py, "-c", "import icechunk"],
                                      capture_output=True).returncode == 0
        if not has_icechunk:
            self.note("W7: icechunk is not importable: the Icechunk comparison is skipped")
        repo = self.init_repo("w7-repo")
        mp = os.path.join(self.scratch, "mnt-w7")
        stores = {"plain": os.path.join(self.scratch, "w7-plain"), "zarrfs": mp}
        if has_icechunk:
            stores["icechunk"] = os.path.join(self.scratch, "w7-icechunk")
        os.makedirs(stores["plain"])
        daemon = self.mount(repo, mp)
        # zarr-python writes both arrays on the FUSE floor too.
        floor = self.mount_floor(os.path.join(self.scratch, "mnt-w7-floor"))
        if floor:
            stores["floor"] = floor
        for label, (shape, chunks), write_target, read_target in (
            ("1 MiB chunks", s.w7_big, 0.95, 0.95),
            ("4 KiB chunks", s.w7_small, 0.90, 0.90),
        ):
            name = "big" if label.startswith("1") else "small"
            self.say(f"W7: {label}: shape {shape}, chunks {chunks}")
            # Twice each, in order and in reverse order (the first write
            # and the first read after the writes are slower whoever does
            # them), keeping the median (of two, the mean) of each
            # store's. The second write makes an array of its own; the
            # reads read the first.
            order = [st for st in stores if st != "floor"]
            both = order + order[::-1]
            read_rounds = s.w7_big_read_rounds if name == "big" else 1
            # The durable writes (big chunks only) go between, in the
            # same way: "plain durable" writes arrays of its own.
            durable = [f"{st} durable" for st in order if st != "zarrfs"] if name == "big" else []
            floors = ["floor"] if floor else []
            writes = order + floors + durable + durable[::-1] + floors + order[::-1]
            runs = [("write", st) for st in writes] + [("read", st) for st in both * read_rounds]
            done = {}
            for op, store in runs:
                if op == "read":
                    self.drop_caches()
                else:
                    os.sync()
                store_kind, _, durably = store.partition(" ")
                # The floor is zarr-python's LocalStore on its mountpoint.
                e2e_kind = "plain" if store_kind == "floor" else store_kind
                array = name if op == "read" else f"{name}-{durably}" if durably else name
                if op == "write" and (op, store) in done:
                    array += "-again"
                daemon_cpu = cpu_seconds(daemon)
                r = self.run([self.venv_py, os.path.join(HERE, "zarr_e2e.py"), op, e2e_kind,
                              stores[store_kind], "--array", array,
                              "--shape", ",".join(map(str, shape)),
                              "--chunks", ",".join(map(str, chunks)),
                              *(["--durable"] if durably else [])])
                daemon_cpu = cpu_seconds(daemon) - daemon_cpu
                split = ""
                if op == "write" and (e2e_kind != "plain" or durably):
                    split = f" (store writes {r['write_seconds']:.3f} s"
                    if e2e_kind != "plain":
                        split += f" + commit {r['commit_seconds']:.3f} s"
                    if durably:
                        split += f" + syncfs {r['sync_seconds']:.3f} s"
                    split += ")"
                cpu = f"; CPU: {store} client {r['cpu_seconds']:.2f} s"
                if store == "zarrfs":
                    cpu += f", daemon {daemon_cpu:.2f} s"
                self.note(f"W7 {label} {op} {store} {array}: {r['seconds']:.3f} s{split}{cpu}")
                done.setdefault((op, store), []).append(r)
            res = {key: dict(rs[0], seconds=median([r["seconds"] for r in rs]))
                   for key, rs in done.items()}
            reads = f"median of {2 * read_rounds} reads each" if read_rounds > 1 else "mean of 2 reads each"
            mib = res[("write", "plain")]["bytes"] / MiB
            nchunks = res[("write", "plain")]["chunks"]
            size = f"{mib:.0f} MiB, {nchunks} chunks"
            for op, target in (("write", write_target), ("read", read_target)):
                self.ratio_row(f"W7 {label} {op} ({size})", res[(op, "zarrfs")]["seconds"],
                               res[(op, "plain")]["seconds"], mib, "MiB/s", target,
                               "zarr LocalStore, plain dir",
                               "mean of 2 writes each, incl. commit" if op == "write" else reads)
            if has_icechunk:
                for op in ("write", "read"):
                    self.ratio_row(f"W7 {label} {op} vs Icechunk", res[(op, "zarrfs")]["seconds"],
                                   res[(op, "icechunk")]["seconds"], mib, "MiB/s",
                                   1.0 if label.startswith("1") else None,
                                   "Icechunk, local storage",
                                   "mean of 2 writes each, incl. commit" if op == "write" else reads)
            for store in durable:
                plain_dir = store.startswith("plain")
                self.ratio_row(f"W7 {label} write vs {'plain' if plain_dir else 'Icechunk'} + syncfs",
                               res[("write", "zarrfs")]["seconds"], res[("write", store)]["seconds"],
                               mib, "MiB/s", None,
                               ("zarr LocalStore, plain dir" if plain_dir else "Icechunk, local storage")
                               + ", then syncfs(2)", "mean of 2 writes each: data on the disk at the end")
            if ("write", "floor") in res:
                self.floor_row(f"W7 {label} write", res[("write", "zarrfs")]["seconds"],
                               res[("write", "floor")]["seconds"], res[("write", "plain")]["seconds"],
                               mib, "MiB/s", "zarr LocalStore; mean of 2 writes each, zarrfs's incl. commit")
        self.umount(mp)
        if floor:
            self.umount_floor(floor)
