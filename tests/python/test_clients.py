"""The Zarr clients scientists use besides zarr-python's own API, through
zarrfs mounts: two users writing different parts of one xarray dataset
both land, as in Arraylake; dask's worker processes write one array at
once; tensorstore leaves the files a plain directory gets."""

import os

import dask
import dask.array as da
import numpy as np
import pytest
import tensorstore as ts
import xarray as xr
import zarr
from trees import files


def temperatures(times):
    """A small dataset of `times` hourly steps: the same values for the
    same steps whoever makes it and however many (one seeded generator,
    drawn in time order)."""
    t = np.arange(times)
    rng = np.random.default_rng(7)
    temp = rng.random((times, 12, 16), dtype=np.float32)
    return xr.Dataset(
        {"temp": (("time", "y", "x"), temp, {"units": "degC"})},
        coords={"time": t, "y": np.arange(12), "x": np.arange(16)},
        attrs={"title": "two users"},
    )


def test_two_users_write_different_times_of_one_dataset_with_xarray_and_both_land(zarrfs):
    full = temperatures(48)
    a = zarrfs.mount("a")
    path = os.path.join(a.path, "weather.zarr")
    # The layout first, as xarray's docs do for parallel writes: metadata
    # and coordinates, no data.
    full.chunk({"time": 6}).to_zarr(path, compute=False, zarr_format=3, consolidated=False)
    a.commit("layout")

    b = zarrfs.mount("b")
    first, second = slice(0, 24), slice(24, 48)
    # A region write takes only the variables along the region's
    # dimension (xarray refuses the others).
    full.isel(time=first).drop_vars(["y", "x"]).chunk({"time": 6}).to_zarr(
        path, region={"time": first}, consolidated=False
    )
    full.isel(time=second).drop_vars(["y", "x"]).chunk({"time": 6}).to_zarr(
        os.path.join(b.path, "weather.zarr"), region={"time": second}, consolidated=False
    )
    # Region writes change only the chunks of their times (the time
    # coordinate is written again with the bytes it has: no change), so
    # the two sessions cannot conflict.
    assert a.changed() == [f"weather.zarr/temp/c/{t}/0/0" for t in range(4)]
    assert b.changed() == [f"weather.zarr/temp/c/{t}/0/0" for t in range(4, 8)]
    a.commit("first day")
    b.commit("second day")  # rebased onto the first day

    a.checkout()
    for user in (a, b):
        back = xr.open_zarr(os.path.join(user.path, "weather.zarr"), consolidated=False)
        xr.testing.assert_identical(back.load(), full)

    # A third day, appended by B: the arrays grow, and A sees them grown.
    more = temperatures(72).isel(time=slice(48, 72))
    more.chunk({"time": 6}).to_zarr(
        os.path.join(b.path, "weather.zarr"), append_dim="time", consolidated=False
    )
    assert "weather.zarr/temp/zarr.json" in b.changed()
    b.commit("third day")
    a.checkout()
    back = xr.open_zarr(path, consolidated=False).load()
    xr.testing.assert_identical(back, temperatures(72))
    assert back.temp.attrs["units"] == "degC"


def test_dask_processes_write_one_array_at_once_through_a_mount(zarrfs):
    m = zarrfs.mount("m")
    path = os.path.join(m.path, "field.zarr")
    x = da.random.default_rng(3).random((240, 240), chunks=(40, 40)).astype("f4")
    expected = x.compute()
    # Six processes at once, each writing the chunks of its tasks.
    with dask.config.set(scheduler="processes", num_workers=6):
        x.to_zarr(path, zarr_format=3)
    assert m.changed() == [f"field.zarr/c/{i}/{j}" for i in range(6) for j in range(6)] + [
        "field.zarr/zarr.json"
    ]
    m.commit("field")

    r = zarrfs.mount("r", "--read-only")
    np.testing.assert_array_equal(zarr.open_array(os.path.join(r.path, "field.zarr"))[:], expected)


@pytest.mark.parametrize("driver", ["zarr3", "zarr"])
def test_tensorstore_writes_what_it_writes_to_a_plain_directory(zarrfs, driver):
    def write(top):
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": os.path.join(top, "ts")}}
        if driver == "zarr3":
            spec["metadata"] = {
                "shape": [100, 200],
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [10, 50]}},
                "data_type": "float32",
            }
        else:
            spec["metadata"] = {"shape": [100, 200], "chunks": [10, 50], "dtype": "<f4"}
        arr = ts.open(spec, create=True, delete_existing=True).result()
        arr.write(np.arange(20000, dtype=np.float32).reshape(100, 200)).result()
        arr[5:15, 20:80].write(np.full((10, 60), -1, np.float32)).result()
        # Grown by 20 rows (its metadata written again), which are written.
        grown = arr.resize(exclusive_max=[120, 200], expand_only=True).result()
        grown[100:120].write(np.ones((20, 200), np.float32)).result()

    plain = os.path.join(zarrfs.dir, "plain")
    os.makedirs(plain)
    write(plain)
    m = zarrfs.mount("m")
    write(m.path)
    assert files(m.path) == files(plain)
    m.commit(f"tensorstore {driver}")

    # zarr-python reads what tensorstore committed, from the branch.
    committed = os.path.join(m.path, ".zarrfs", "branches", "main", "ts")
    values = zarr.open_array(committed, mode="r")[:]
    expected = np.arange(20000, dtype=np.float32).reshape(100, 200)
    expected[5:15, 20:80] = -1
    np.testing.assert_array_equal(values[:100], expected)
    np.testing.assert_array_equal(values[100:], 1)
