"""zarr-python 3's LocalStore through zarrfs mounts: write an array and
a group, commit, and read the same values back through a new mount; write
an array again as a notebook run twice does."""

import errno
import json

import numpy as np
import pytest
import zarr


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
