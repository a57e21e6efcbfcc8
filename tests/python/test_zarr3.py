"""zarr-python 3's LocalStore through zarrfs mounts: write an array and
a group, commit, and read the same values back through a new mount; write
an array again as a notebook run twice does; a notebook's worth of Zarr
operations leaves the files it leaves in a plain directory."""

import errno
import json
import os
import warnings

import numpy as np
import pytest
import zarr
from trees import files


def test_zarr3_round_trip_through_a_commit(zarrfs):
    w = zarrfs.mount("w")
    store = zarr.storage.LocalStore(w.path)
    root = zarr.group(store=store)
    root.attrs["title"] = "round trip"
    arr = root.create_array("arr", shape=(100, 100), chunks=(10, 10), dtype="float32")
    data = np.arange(10000, dtype="float32").reshape(100, 100)
    arr[:] = data
    arr[0, 0] = -1
    arr.attrs["units"] = "m"
    root.create_group("toy_data")
    nested = zarr.create_array(store, name="x/y/z", shape=(4,), chunks=(2,), dtype="i4")
    nested[:] = [1, 2, 3, 4]
    # Overwriting an array removes it first (shutil.rmtree, fd-based).
    scratch = root.create_array("scratch", shape=(4,), chunks=(2,), dtype="i4")
    scratch[:] = 7
    scratch = root.create_array(
        "scratch", shape=(4,), chunks=(2,), dtype="i4", overwrite=True
    )
    scratch[:] = 8

    changed = w.changed()
    assert "zarr.json" in changed
    assert "arr/zarr.json" in changed
    assert "arr/c/0/0" in changed
    assert "toy_data/zarr.json" in changed
    assert not any(".partial" in p for p in changed), changed
    commit = w.commit("zarr 3 array")
    assert w.changed() == []
    assert len(commit) == 64

    r = zarrfs.mount("r", "--read-only")
    root = zarr.open_group(store=zarr.storage.LocalStore(r.path, read_only=True), mode="r")
    assert root.attrs["title"] == "round trip"
    expected = data.copy()
    expected[0, 0] = -1
    np.testing.assert_array_equal(root["arr"][:], expected)
    assert root["arr"].attrs["units"] == "m"
    np.testing.assert_array_equal(root["x/y/z"][:], [1, 2, 3, 4])
    np.testing.assert_array_equal(root["scratch"][:], [8, 8, 8, 8])
    assert sorted(root.group_keys()) == ["toy_data", "x"]

    log = json.loads(r.read_control("log.json"))
    assert log[0]["message"] == "zarr 3 array"


def test_an_array_written_again_changes_only_the_chunks_that_differ(zarrfs):
    """Running a notebook again overwrites its arrays (zarr-python removes
    the array's directory and writes it anew): what was written the same
    is no change, and what differs does not conflict with another user's
    commit to other chunks of the array."""
    w = zarrfs.mount("w")
    store = zarr.storage.LocalStore(w.path)
    data = np.arange(10000, dtype="float32").reshape(100, 100)

    def write(values):
        arr = zarr.create_array(
            store, name="arr", shape=(100, 100), chunks=(10, 10), dtype="float32",
            overwrite=True,
        )
        arr[:] = values

    write(data)
    w.commit("first run")

    write(data)
    assert w.changed() == []
    with pytest.raises(OSError) as nothing:
        w.commit("second run, the same")
    assert nothing.value.errno == errno.ENODATA

    other = zarrfs.mount("other")
    zarr.open_array(zarr.storage.LocalStore(other.path), path="arr")[0:10, 0:10] = -1
    other.commit("first chunk")

    changed = data.copy()
    changed[55, 55] = 0
    write(changed)
    assert w.changed() == ["arr/c/5/5"]
    w.commit("third run, one value changed")

    expected = changed.copy()
    expected[0:10, 0:10] = -1
    np.testing.assert_array_equal(zarr.open_array(store, path="arr")[:], expected)


def notebook(root):
    """A notebook's worth of zarr-python 3 on stores under `root`: arrays
    written, overwritten, resized, appended and deleted, sharded arrays
    updated in part, a Zarr 2 store, nested groups, consolidated metadata."""
    store = zarr.storage.LocalStore(os.path.join(root, "data.zarr"))
    g = zarr.open_group(store, mode="w")
    g.attrs["title"] = "notebook"
    rng = np.random.default_rng(0)
    a = g.create_array("temp", shape=(20, 30), chunks=(5, 10), dtype="f4", fill_value=np.nan)
    a[:] = rng.random((20, 30), dtype="f4")
    a[3:7, 4:25] = -1
    a.resize((25, 30))
    a[20:25] = 2
    a.append(np.ones((5, 30), dtype="f4"), axis=0)
    a.attrs["units"] = "K"
    s = g.create_array(
        "sharded", shape=(64, 64), chunks=(8, 8), shards=(32, 32), dtype="i2", fill_value=0
    )
    s[:] = np.arange(64 * 64, dtype="i2").reshape(64, 64)
    s[10:12, 40:50] = 7
    s[0:8, 0:8] = 0
    v2 = zarr.open_group(
        zarr.storage.LocalStore(os.path.join(root, "v2.zarr")), mode="w", zarr_format=2
    )
    b = v2.create_array("b", shape=(12,), chunks=(5,), dtype="i8", fill_value=0)
    b[:] = np.arange(12)
    b[0:5] = 0  # all fill value: the chunk is removed
    tmp = g.create_array("tmp", shape=(4,), chunks=(2,), dtype="u1")
    tmp[:] = 9
    del g["tmp"]
    g.create_group("a/b/c").create_array("deep", shape=(3,), chunks=(3,), dtype="i4")[:] = [1, 2, 3]
    g.create_array("temp2", shape=(6,), chunks=(3,), dtype="i4")[:] = 1
    g.create_array("temp2", shape=(9,), chunks=(3,), dtype="i4", overwrite=True)[3:9] = 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(store)


def test_a_notebook_leaves_the_files_a_plain_directory_has_and_runs_again_unchanged(zarrfs):
    plain = os.path.join(zarrfs.dir, "plain")
    os.makedirs(plain)
    notebook(plain)
    w = zarrfs.mount("w")
    notebook(w.path)
    expected = files(plain)
    assert files(w.path) == expected
    w.commit("notebook")

    # Run again on the committed data: the same bytes, so no change.
    notebook(w.path)
    assert w.changed() == []
    r = zarrfs.mount("r", "--read-only")
    assert files(r.path) == expected
