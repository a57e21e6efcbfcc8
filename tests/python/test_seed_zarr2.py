"""The seed tutorial (Arraylake's "conflict resolution" walkthrough)
with zarr-python 2.18's DirectoryStoreV3 on two zarrfs mounts, User A and
User B, each committing through its mount's .zarrfs/ control files.

The seed starts from a repository whose root group exists, so a first
mount creates the root group and commits it before A and B mount.

Status lists files, where the seed also shows `data/root/toy_data/ones`
for User B in example 1: that entry is Arraylake's record of a prefix
deletion (zarr deletes the array's chunk prefix before copying it in),
which removed nothing. A zarrfs status lists the files and directories
whose content differs from the base; deleting a directory that does not
exist changes nothing, so it is not listed.
"""

import errno
import os

os.environ["ZARR_V3_EXPERIMENTAL_API"] = "1"  # read when zarr is imported

import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import zarr  # noqa: E402
from zarr._storage.v3 import DirectoryStoreV3  # noqa: E402

ONES_CHUNKS = [
    "data/root/toy_data/ones/c0/0",
    "data/root/toy_data/ones/c0/1",
    "data/root/toy_data/ones/c1/0",
    "data/root/toy_data/ones/c1/1",
]


def root_group(mount):
    """The root group, opened afresh (zarr caches attributes)."""
    return zarr.open_group(DirectoryStoreV3(mount.path), mode="a", zarr_version=3)


def test_the_seed_walkthrough(zarrfs):
    setup = zarrfs.mount("setup")
    zarr.group(store=DirectoryStoreV3(setup.path))
    assert setup.changed() == ["meta/root.group.json", "zarr.json"]
    setup.commit("Initialize the root group")
    setup.umount()

    a = zarrfs.mount("a", "--author", "User A <a@example.org>")
    b = zarrfs.mount("b", "--author", "User B <b@example.org>")
    assert a.changed() == [] and b.changed() == []
    assert "No changes in current session" in a.read_control("status")

    # User A adds a metadata attribute to the root group and commits.
    root_group(a).attrs["foo"] = "bar"
    assert root_group(a).attrs.asdict() == {"foo": "bar"}
    assert a.changed() == ["meta/root.group.json"]
    assert "paths modified in session" in a.read_control("status")
    session_a = a.status()["session"]
    c1 = a.commit("User A added metadata")
    assert a.status()["session"] != session_a, "a commit starts a new session"
    assert a.changed() == []

    # User B is behind until it checks out.
    assert root_group(b).attrs.asdict() == {}
    b.checkout()
    assert b.read_control("checkout").strip() == c1
    assert root_group(b).attrs.asdict() == {"foo": "bar"}
    assert b.changed() == []

    # Example 1: a change that does not conflict.
    root_group(a).attrs["a new key"] = "a new val"
    assert a.changed() == ["meta/root.group.json"]
    c2 = a.commit("User A made a metadata update")

    root = root_group(b)
    root.create_group("toy_data/")
    z_arr = zarr.array(np.ones((3, 3)), chunks=(2, 2))
    root.toy_data["ones"] = z_arr
    assert b.changed() == sorted(
        ONES_CHUNKS
        + ["meta/root/toy_data.group.json", "meta/root/toy_data/ones.array.json"]
    )
    c3 = b.commit("User B wrote chunk data to repo")
    log = [line for line in b.read_control("log").splitlines()]
    assert log[0] == f"Commit ID {c3}"
    import json

    records = json.loads(b.read_control("log.json"))
    assert records[0]["parents"] == [c2], "B's commit was rebased onto A's"
    assert root_group(b).attrs.asdict() == {"foo": "bar", "a new key": "a new val"}

    # Example 2: a change that conflicts.
    a.checkout()
    b.checkout()
    root_group(a)["toy_data"].attrs["toy_key"] = "toy_val"
    assert a.changed() == ["meta/root/toy_data.group.json"]
    a.commit("User A modified toy_data metadata")

    root_group(b)["toy_data"].attrs["another toy key"] = "another toy val"
    assert b.changed() == ["meta/root/toy_data.group.json"]
    base_b = b.read_control("checkout").strip()
    session_b = b.status()["session"]
    with pytest.raises(OSError) as failure:
        b.commit("User B added attr to metadata")
    assert failure.value.errno == errno.EBUSY
    assert b.read_control("commit") == (
        f"Conflicting paths found for rebase {base_b}->main, "
        "including ['meta/root/toy_data.group.json']\n"
    )
    assert b.status()["session"] == session_b, "the session is kept"
    assert b.changed() == ["meta/root/toy_data.group.json"], "nothing is lost"
    assert root_group(b)["toy_data"].attrs.asdict() == {
        "another toy key": "another toy val"
    }
    b.discard()

    # Example 3: independent chunk writes.
    a.checkout()
    b.checkout()
    ones_a = root_group(a).toy_data["ones"]
    np.testing.assert_array_equal(ones_a[:], np.ones((3, 3)))
    ones_a[0, slice(0, 2)] = 10
    np.testing.assert_array_equal(
        ones_a[:], [[10, 10, 1], [1, 1, 1], [1, 1, 1]]
    )
    assert a.changed() == ["data/root/toy_data/ones/c0/0"]
    a.commit("User A modified 1 chunk")

    ones_b = root_group(b)["toy_data/ones"]
    ones_b[-1, -1] = 3
    np.testing.assert_array_equal(ones_b[:], [[1, 1, 1], [1, 1, 1], [1, 1, 3]])
    assert b.changed() == ["data/root/toy_data/ones/c1/1"]
    b.commit("User B modified chunk data")
    np.testing.assert_array_equal(
        root_group(b)["toy_data/ones"][:], [[10, 10, 1], [1, 1, 1], [1, 1, 3]]
    )
    # User A does not see B's change until it checks out.
    np.testing.assert_array_equal(
        root_group(a)["toy_data/ones"][:], [[10, 10, 1], [1, 1, 1], [1, 1, 1]]
    )
    a.checkout()
    np.testing.assert_array_equal(
        root_group(a)["toy_data/ones"][:], [[10, 10, 1], [1, 1, 1], [1, 1, 3]]
    )

    messages = [r["message"] for r in json.loads(a.read_control("log.json"))]
    assert messages == [
        "User B modified chunk data",
        "User A modified 1 chunk",
        "User A modified toy_data metadata",
        "User B wrote chunk data to repo",
        "User A made a metadata update",
        "User A added metadata",
        "Initialize the root group",
        "Repository created",
    ]
