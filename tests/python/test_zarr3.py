"""zarr-python 3's LocalStore through a zarrfs mount: write an array and
a group, commit, and read the same values back through a new mount."""

import json

import numpy as np
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
