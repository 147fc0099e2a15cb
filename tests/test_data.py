"""Tests of fastdto.data: dSprites generator and loader, IDX reader/writer, synthetic tasks, Dataset."""

import gzip
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdto import data
from fastdto.data import dsprites, mnist, synth


# ----------------------------------------------------------------------------- registry and load()


def test_names_and_dispatch_errors():
    assert data.names() == ["dsprites", "mnist", "fashion-mnist", "synth-lin", "synth-nonlin"]
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar10")
    with pytest.raises(TypeError, match="unknown option"):
        data.load("synth-lin", n=10, colour="red")
    with pytest.raises(TypeError, match="unknown option"):
        data.load("dsprites", subset=1, scale_ratio=2.0)
    with pytest.raises(TypeError, match="root"):
        data.load("synth-nonlin", root="/tmp")
    with pytest.raises(TypeError, match="synth-lin only"):
        data.load("synth-nonlin", n=5, scale_ratio=1.5)
    assert data.load("SYNTH_LIN", n=3).name == "synth-lin"


@pytest.mark.parametrize("name, options, argument", [
    # truncated or coerced without a word before (2.7 points gave 2, "5" gave 5, True gave 1)
    ("synth-lin", {"n": 2.7}, "n"), ("synth-lin", {"n": "5"}, "n"), ("synth-lin", {"n": True}, "n"),
    ("synth-lin", {"seed": 1.5}, "seed"), ("synth-lin", {"scale_ratio": "2"}, "scale_ratio"),
    ("synth-nonlin", {"weight_seed": 2.5}, "weight_seed"),
    ("dsprites", {"block_size": 0}, "block_size"), ("dsprites", {"block_size": 2.5}, "block_size"),
    # failed with messages that did not name the argument
    ("synth-lin", {"n": float("nan")}, "n"), ("synth-lin", {"seed": 2**70}, "seed"),
    ("dsprites", {"split_seed": -1}, "split_seed"), ("dsprites", {"test_fraction": "x"}, "test_fraction"),
    ("dsprites", {"cache_dir": 5}, "cache_dir"),
])
def test_load_options_are_checked(name, options, argument):
    extra = {"subset": 4} if name == "dsprites" else {"n": 3} if "n" not in options else {}
    with pytest.raises((ValueError, TypeError), match=f"^{argument}"):
        data.load(name, **options, **extra)
    assert data.load("synth-lin", n=np.int64(3), seed=np.int32(1)).x_raw.shape == (3, 3)  # NumPy integers are fine


# ----------------------------------------------------------------------------- dSprites factor grid


def test_full_factor_grid_size_order_and_values():
    classes, values = dsprites.factor_grid()
    assert classes.shape == values.shape == (737_280, 5)
    assert dsprites.N_IMAGES == 737_280 and dsprites.GRID_SIZES == (3, 6, 40, 32, 32)
    # Last factor (posY) varies fastest, shape slowest, exactly as in the original file.
    assert classes[:3].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 2]]
    assert classes[32].tolist() == [0, 0, 0, 1, 0]
    assert classes[32 * 32].tolist() == [0, 0, 1, 0, 0]
    assert classes[32 * 32 * 40].tolist() == [0, 1, 0, 0, 0]
    assert classes[-1].tolist() == [2, 5, 39, 31, 31]
    np.testing.assert_array_equal(dsprites.grid_index(classes[::997]), np.arange(0, 737_280, 997))
    # Every combination exactly once.
    assert np.unique(dsprites.grid_index(classes)).size == 737_280
    # Original latents_values.
    np.testing.assert_array_equal(np.unique(values[:, 0]), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.unique(values[:, 1]), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    orient = np.unique(values[:, 2])
    assert orient.size == 40 and orient[0] == 0.0
    np.testing.assert_allclose(orient[1], 0.16110732, atol=1e-8)  # 2*pi/39: endpoint included
    np.testing.assert_allclose(orient[-1], 2 * np.pi)
    for k in (3, 4):
        np.testing.assert_allclose(np.unique(values[:, k]), np.linspace(0, 1, 32))
    assert np.isclose(values[1, 4], 1 / 31) and np.isclose(values[32, 3], 1 / 31)


def test_loaded_factors_match_grid_and_metadata():
    ds = data.load("dsprites", split="all", subset=[0, 1, 1024, 737_279])
    assert ds.factor_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert ds.factor_discrete == [True, False, False, False, False]
    assert ds.factor_sizes == [3, None, None, None, None]
    assert ds.image_shape == (64, 64) and ds.input_dim == 4096
    assert ds.x_raw.dtype == torch.uint8 and ds.x_raw.shape == (4, 512)
    assert ds.factors.dtype == torch.float32
    np.testing.assert_array_equal(ds.meta["grid_index"], [0, 1, 1024, 737_279])
    _, values = dsprites.factor_grid(ds.meta["grid_index"])
    np.testing.assert_array_equal(ds.factors.numpy(), values.astype(np.float32))


def test_splits_are_deterministic_disjoint_and_complete():
    n = dsprites.N_IMAGES
    train = dsprites.split_indices(n, "train")
    test = dsprites.split_indices(n, "test")
    assert train.size == 663_552 and test.size == 73_728
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert np.array_equal(test, dsprites.split_indices(n, "test"))
    assert not np.array_equal(test, dsprites.split_indices(n, "test", seed=1))
    assert dsprites.split_indices(n, "test", test_fraction=0.25).size == n // 4
    assert np.all(np.diff(train) > 0)
    with pytest.raises(ValueError):
        dsprites.split_indices(n, "valid")
    with pytest.raises(ValueError):
        dsprites.split_indices(n, "test", test_fraction=1.0)
    ds = data.load("dsprites", split="test", subset=[0, -1])
    np.testing.assert_array_equal(ds.meta["grid_index"], test[[0, -1]])
    assert len(data.load("dsprites", split="test", subset=np.array(3))) == 3  # a count, as subset=3
    with pytest.raises(IndexError, match=r"\[-73728, 73728\)"):
        data.load("dsprites", split="test", subset=[-73729])


# ----------------------------------------------------------------------------- dSprites images


def _centred(shape, scale=1.0, orientation=0.0):
    return dsprites.render(shape, scale, orientation, 0.5, 0.5)[0]


def test_square_at_scale_one_is_a_20px_block():
    img = _centred(0)
    assert img.dtype == bool and img.shape == (64, 64)
    assert img.sum() == 400
    expected = np.zeros((64, 64), bool)
    expected[22:42, 22:42] = True
    np.testing.assert_array_equal(img, expected)
    # Same image from the grid: square, scale 1 (class 5), orientation 0, nearest positions to 0.5
    # are 15/31 and 16/31, i.e. centres 31.48 and 32.52 px: still a 20x20 block, shifted.
    idx = dsprites.grid_index([[0, 5, 0, 16, 16]])
    grid_img = dsprites.unpack(dsprites.generate(idx))[0]
    assert grid_img.sum() == 400


def test_rotation_direction_symmetries_and_translation():
    for s in range(3):
        a = _centred(s)
        assert a.sum() > 0
        np.testing.assert_array_equal(_centred(s, orientation=np.pi / 2), np.rot90(a))  # counter-clockwise
        np.testing.assert_array_equal(_centred(s, orientation=np.pi), a[::-1, ::-1])
        # Shifting the position by k/32 moves the sprite by exactly k pixels (x: columns, y: rows down).
        b = dsprites.render(s, 0.7, 1.0, 0.5 + 3 / 32, 0.5 - 2 / 32)[0]
        np.testing.assert_array_equal(b, np.roll(dsprites.render(s, 0.7, 1.0, 0.5, 0.5)[0], (-2, 3), (0, 1)))
        # Pixel count grows with scale.
        counts = [int(_centred(s, scale=v).sum()) for v in np.linspace(0.5, 1, 6)]
        assert counts == sorted(counts) and counts[0] < counts[-1]
    # A square turned by 90 degrees is the same square; the heart is not symmetric that way.
    np.testing.assert_array_equal(_centred(0, orientation=np.pi / 2), _centred(0))
    assert not np.array_equal(_centred(2, orientation=np.pi), _centred(2))
    # Heart lobes point up at orientation 0: more pixels in the upper half.
    heart = _centred(2)
    assert heart[:32].sum() > heart[32:].sum()
    # Ellipse is wider than tall at orientation 0.
    ell = _centred(1)
    assert ell.any(axis=0).sum() == 20 and ell.any(axis=1).sum() == 10


def test_grid_orientation_endpoints_coincide_and_positions_move_sprite():
    # Orientation 0 and 2*pi (classes 0 and 39) are the same image, as in the original.
    first = dsprites.grid_index([[s, 3, 0, 7, 20] for s in range(3)])
    last = dsprites.grid_index([[s, 3, 39, 7, 20] for s in range(3)])
    np.testing.assert_array_equal(dsprites.generate(first), dsprites.generate(last))
    # posX moves the centre of mass right, posY moves it down.
    idx = dsprites.grid_index([[2, 5, 5, 0, 10], [2, 5, 5, 31, 10], [2, 5, 5, 10, 0], [2, 5, 5, 10, 31]])
    imgs = dsprites.unpack(dsprites.generate(idx)).astype(float)
    rows, cols = np.mgrid[:64, :64]
    com_c = (imgs * cols).sum((1, 2)) / imgs.sum((1, 2))
    com_r = (imgs * rows).sum((1, 2)) / imgs.sum((1, 2))
    assert com_c[1] - com_c[0] > 30 and abs(com_r[1] - com_r[0]) < 1e-9
    assert com_r[3] - com_r[2] > 30 and abs(com_c[3] - com_c[2]) < 1e-9
    # Sprites stay inside the frame: nothing on the outermost pixel ring at the extreme positions.
    corners = dsprites.grid_index([[s, 5, o, x, y] for s in range(3) for o in (0, 5, 10) for x in (0, 31) for y in (0, 31)])
    ring = dsprites.unpack(dsprites.generate(corners))
    assert not ring[:, [0, -1], :].any() and not ring[:, :, [0, -1]].any()


def test_generation_is_deterministic_and_crop_is_exact():
    rng = np.random.default_rng(123)
    idx = np.sort(rng.choice(dsprites.N_IMAGES, 600, replace=False))
    a = dsprites.generate(idx)
    b = dsprites.generate(idx, block_size=37)
    assert a.dtype == np.uint8 and a.shape == (600, 512)
    assert a.tobytes() == b.tobytes()
    assert data.load("dsprites", subset=50).x_raw.numpy().tobytes() == data.load("dsprites", subset=50).x_raw.numpy().tobytes()
    n = 500
    args = (rng.integers(0, 3, n), rng.uniform(0.5, 1, n), rng.uniform(0, 7, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n))
    np.testing.assert_array_equal(dsprites.render(*args), dsprites.render(*args, crop=False))
    with pytest.raises(ValueError):
        dsprites.render(3, 1.0, 0.0, 0.5, 0.5)


def test_bitpack_round_trip_and_batch_matches_render():
    rng = np.random.default_rng(0)
    imgs = rng.random((7, 64, 64)) < 0.3
    packed = dsprites.pack(imgs)
    assert packed.shape == (7, 512) and packed.dtype == np.uint8
    np.testing.assert_array_equal(dsprites.unpack(packed).astype(bool), imgs)
    ds = data.load("dsprites", split="all", subset=[5, 70_000, 500_000])
    _, v = dsprites.factor_grid(ds.meta["grid_index"])
    ref = dsprites.render(v[:, 0].astype(int) - 1, v[:, 1], v[:, 2], v[:, 3], v[:, 4])
    np.testing.assert_array_equal(ds.batch(slice(None)).numpy().reshape(3, 64, 64), ref.astype(np.float32))


def test_cache_dir_writes_atomically_and_reuses(tmp_path, monkeypatch):
    calls = []

    def fake_generate(indices=None, block_size=512, out=None):  # full-grid stand-in: row i = i mod 251
        calls.append(indices)
        out[:] = (np.arange(out.shape[0]) % 251).astype(np.uint8)[:, None]
        return out

    monkeypatch.setattr(dsprites, "generate", fake_generate)
    cache = tmp_path / "cache"
    ds = data.load("dsprites", split="all", subset=[3, 600_000], cache_dir=cache)
    assert len(calls) == 1 and calls[0] is None
    files = os.listdir(cache)
    assert files == [f"fastdto-dsprites-procedural-{dsprites.RENDER_VERSION}.npy"]  # no temp file left
    np.testing.assert_array_equal(ds.x_raw[:, 0].numpy(), [3, 600_000 % 251])
    ds2 = data.load("dsprites", split="all", subset=[3, 600_000], cache_dir=cache)
    assert len(calls) == 1  # reused, not regenerated
    assert torch.equal(ds.x_raw, ds2.x_raw)
    # A damaged cache is replaced, with a warning.
    (cache / files[0]).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="regenerating"):
        data.load("dsprites", split="all", subset=[3], cache_dir=cache)
    assert len(calls) == 2 and os.listdir(cache) == files


def _write_fake_original(path, n=12):
    """A miniature archive in the original layout (keys and column order), with rendered images."""
    idx = np.linspace(0, dsprites.N_IMAGES - 1, n).astype(np.int64)
    classes, values = dsprites.factor_grid(idx)
    imgs = dsprites.unpack(dsprites.generate(idx))
    latents_classes = np.concatenate([np.zeros((n, 1), np.int64), classes], axis=1)
    latents_values = np.concatenate([np.ones((n, 1)), values], axis=1)
    np.savez_compressed(path, imgs=imgs, latents_classes=latents_classes, latents_values=latents_values)
    return imgs, values


def test_original_archive_loader(tmp_path):
    path = tmp_path / dsprites.ORIGINAL_FILENAME
    imgs, values = _write_fake_original(path)
    for root in (path, tmp_path):
        ds = data.load("dsprites", split="all", root=root)
        assert len(ds) == 12 and ds.meta["source"] == str(path)
        np.testing.assert_array_equal(ds.batch(slice(None)).numpy().reshape(12, 64, 64), imgs)
        np.testing.assert_array_equal(ds.factors.numpy(), values.astype(np.float32))
    test = data.load("dsprites", split="test", root=path, test_fraction=0.25)
    assert len(test) == 3
    np.testing.assert_array_equal(test.batch(slice(None)).numpy().reshape(3, 64, 64), imgs[test.meta["grid_index"]])
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        data.load("dsprites", root=missing)
    assert str(missing) in str(err.value) and dsprites.ORIGINAL_FILENAME in str(err.value)
    bad = tmp_path / "bad.npz"
    np.savez(bad, imgs=imgs)
    with pytest.raises(ValueError, match="latents"):
        data.load("dsprites", root=bad)
    # not archives at all: a single array, a truncated download, text (were raw numpy/zipfile errors)
    single = tmp_path / "imgs.npy"
    np.save(single, imgs)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    for wrong in (single, truncated, text):
        with pytest.raises(ValueError, match="not a (readable )?.npz archive") as err:
            data.load("dsprites", root=wrong)
        assert str(wrong) in str(err.value)


def test_batch_rejects_ambiguous_indices():
    ds = data.load("synth-lin", n=10)
    with pytest.raises(TypeError, match="bool"):
        ds.batch(True)
    for mask in (torch.tensor(True), torch.ones(2, 5, dtype=torch.bool), torch.ones(9, dtype=torch.bool)):
        with pytest.raises(ValueError, match="boolean batch mask"):
            ds.batch(mask)
    assert ds.batch(torch.arange(10) % 2 == 0).shape == (5, ds.input_dim)


def test_original_archive_subsets_in_any_order(tmp_path, monkeypatch):
    """Positions in any order, repeated, across read blocks: each image stays with its own factors."""
    path = tmp_path / dsprites.ORIGINAL_FILENAME
    imgs, values = _write_fake_original(path)
    read = dsprites._read_original_images
    monkeypatch.setattr(dsprites, "_read_original_images", lambda p, idx: read(p, idx, block=5))  # 3 blocks
    pos = [11, 3, 7, 0, 7, 10]
    ds = data.load("dsprites", split="all", root=path, subset=pos)
    np.testing.assert_array_equal(ds.meta["grid_index"], pos)
    np.testing.assert_array_equal(ds.batch(slice(None)).numpy().reshape(len(pos), 64, 64), imgs[pos])
    np.testing.assert_array_equal(ds.factors.numpy(), values[pos].astype(np.float32))
    assert len(data.load("dsprites", split="all", root=path, subset=[])) == 0


# ----------------------------------------------------------------------------- IDX / MNIST family


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        arr = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / f"a-idx3{suffix}"
    data.write_idx(path, arr)
    back = data.read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    raw = gzip.open(path).read() if suffix else path.read_bytes()
    assert raw[:4] == bytes([0, 0, {np.uint8: 8, np.int8: 9, np.int16: 11, np.int32: 12, np.float32: 13, np.float64: 14}[dtype], 3])


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_idx_round_trip_property(tmp_path_factory, shape, seed):
    arr = np.random.default_rng(seed).integers(-(2**31), 2**31 - 1, size=shape, dtype=np.int64).astype(np.int32)
    path = tmp_path_factory.mktemp("idx") / "x.idx"
    data.write_idx(path, arr)
    np.testing.assert_array_equal(data.read_idx(path), arr)


def test_idx_corruption_is_a_value_error(tmp_path):
    good = tmp_path / "good"
    data.write_idx(good, np.zeros((4, 28, 28), np.uint8))
    raw = good.read_bytes()
    cases = {
        "magic": b"\x00\x01" + raw[2:],
        "typecode": raw[:2] + b"\x07" + raw[3:],
        "truncated": raw[:-5],
        "trailing": raw + b"\x00",
        "short": raw[:3],
        # shape (65536,) * 4 holds 2^64 bytes, which int64 arithmetic wrapped to the 0 bytes that follow
        "overflow": raw[:3] + b"\x04" + bytes.fromhex("00010000" * 4),
    }
    for label, content in cases.items():
        p = tmp_path / label
        p.write_bytes(content)
        with pytest.raises(ValueError, match=str(p)):
            data.read_idx(p)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError):
        data.read_idx(gz)
    with pytest.raises(ValueError):
        data.write_idx(tmp_path / "x", np.zeros(3, np.uint64))


def _fake_mnist_dir(root, n_train=6, n_test=4, gz=False):
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        img_name, lab_name = mnist.FILES[split]
        ext = ".gz" if gz else ""
        data.write_idx(root / (img_name + ext), imgs)
        data.write_idx(root / (lab_name + ext), labels)
        out[split] = (imgs, labels)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_family_loading(tmp_path, monkeypatch, gz):
    ref = _fake_mnist_dir(tmp_path / "m", gz=gz)
    ds = data.load("mnist", root=tmp_path / "m")
    imgs, labels = ref["train"]
    assert len(ds) == 6 and ds.x_raw.dtype == torch.uint8 and ds.input_dim == 784 and ds.image_shape == (28, 28)
    assert ds.factor_names == ["label"] and ds.factor_discrete == [True] and ds.factor_sizes == [10]
    np.testing.assert_array_equal(ds.factors[:, 0].numpy(), labels.astype(np.float32))
    x = ds.batch([0, 5])
    assert x.dtype == torch.float32 and x.shape == (2, 784)
    np.testing.assert_allclose(x.numpy(), imgs[[0, 5]].reshape(2, 784) / 255.0, rtol=1e-6)
    monkeypatch.setenv("FASTDTO_FASHION_MNIST_DIR", str(tmp_path / "m"))
    test = data.load("fashion-mnist", split="test")
    assert test.name == "fashion-mnist" and len(test) == 4
    with pytest.raises(ValueError, match="split"):
        data.load("mnist", split="all", root=tmp_path / "m")


def test_mnist_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTDTO_MNIST_DIR", raising=False)
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", root=missing)
    msg = str(err.value)
    assert str(missing) in msg and "FASTDTO_MNIST_DIR" in msg
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert f in msg
    with pytest.raises(FileNotFoundError, match="FASTDTO_MNIST_DIR"):
        data.load("mnist")
    # Directory present, one file absent; the Fashion-MNIST message names the apt package.
    _fake_mnist_dir(tmp_path / "f")
    os.remove(tmp_path / "f" / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError) as err:
        data.load("fashion-mnist", split="test", root=tmp_path / "f")
    msg = str(err.value)
    assert "dataset-fashion-mnist" in msg and "FASTDTO_FASHION_MNIST_DIR" in msg and "t10k-labels-idx1-ubyte" in msg
    monkeypatch.delenv("FASTDTO_FASHION_MNIST_DIR", raising=False)
    assert mnist.resolve_root("fashion-mnist")[0] == "/usr/share/datasets/fashion-mnist"


def test_mnist_inconsistent_files(tmp_path):
    root = tmp_path / "m"
    _fake_mnist_dir(root)
    data.write_idx(root / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))  # 6 images, 5 labels
    with pytest.raises(ValueError, match="labels"):
        data.load("mnist", root=root)
    data.write_idx(root / "train-labels-idx1-ubyte", np.full(6, 10, np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        data.load("mnist", root=root)


# ----------------------------------------------------------------------------- synthetic tasks


def test_synth_lin_matrix():
    m = synth.mixing_matrix()
    np.testing.assert_allclose(m, [[1.6095, -0.5059], [0.6212, 0.8047], [1.0118, 0.3106]], atol=1e-4)
    assert abs(m[:, 0] @ m[:, 1]) < 1e-12
    np.testing.assert_allclose(np.linalg.norm(m, axis=0), [2.0, 1.0])
    r = synth.rotation_matrix()
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    axis = np.array([1.0, -1.0, 1.0]) / math.sqrt(3)
    np.testing.assert_allclose(r @ axis, axis, atol=1e-12)
    assert np.isclose((np.trace(r) - 1) / 2, math.cos(math.pi / 4))
    for ratio in (1.0, 1.2, 1.5):
        mr = synth.mixing_matrix(ratio)
        norms = np.linalg.norm(mr, axis=0)
        np.testing.assert_allclose(norms, [2.0, 2.0 / ratio])
        assert abs(mr[:, 0] @ mr[:, 1]) < 1e-12
    with pytest.raises(ValueError):
        synth.mixing_matrix(0.0)


def test_synth_datasets_deterministic_and_consistent():
    a = data.load("synth-lin")
    b = data.load("synth-lin")
    assert len(a) == 50_000 and a.input_dim == 3 and a.image_shape is None
    assert a.x_raw.dtype == torch.float32 and a.factors.shape == (50_000, 2)
    assert a.factor_names == ["v1", "v2"] and a.factor_discrete == [False, False] and a.factor_sizes == [None, None]
    assert a.x_raw.numpy().tobytes() == b.x_raw.numpy().tobytes()
    assert 0.0 <= float(a.factors.min()) and float(a.factors.max()) < 1.0
    np.testing.assert_allclose(a.x_raw.numpy(), a.factors.double().numpy() @ synth.mixing_matrix().T, atol=1e-6)
    test = data.load("synth-lin", split="test")
    assert len(test) == 10_000 and not torch.equal(test.factors[:100], a.factors[:100])
    assert len(data.load("synth-lin", split="test", n=123)) == 123
    # Pin the seeded draws: a change of seeds or of torch's generator must not go unnoticed.
    assert torch.equal(a.factors[:5], synth.sample_factors(5, synth.TRAIN_SEED).float())
    n1 = data.load("synth-nonlin", n=1000)
    n2 = data.load("synth-nonlin", n=1000)
    assert n1.input_dim == 6 and torch.equal(n1.x_raw, n2.x_raw)
    p = synth.nonlin_params()
    assert [tuple(p[k].shape) for k in ("W1", "b1", "W2", "b2")] == [(10, 2), (10,), (6, 10), (6,)]
    # Standard normal draws in the documented order from the documented seed.
    g = torch.Generator().manual_seed(synth.WEIGHT_SEED)
    for k in ("W1", "b1", "W2", "b2"):
        assert torch.equal(p[k], torch.randn(p[k].shape, generator=g, dtype=torch.float64))
    # The signal must stand well above the noise level of the recipe's beta (sqrt(1e-3 / 2) = 0.022).
    assert float(n1.x_raw.std(0).min()) > 0.1
    v = n1.factors.double()
    ref = torch.tanh(v @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    np.testing.assert_allclose(n1.x_raw.numpy(), ref.numpy(), atol=1e-6)
    other = data.load("synth-nonlin", n=1000, weight_seed=5)
    assert torch.equal(other.factors, n1.factors) and not torch.equal(other.x_raw, n1.x_raw)


# ----------------------------------------------------------------------------- Dataset.batch / to


def _devices():
    devs = ["cpu", "meta"]  # meta tensors have no data: any host round trip would fail
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


@pytest.mark.parametrize("device", _devices())
def test_batch_dtype_range_device(device):
    sets = [
        data.load("dsprites", subset=20),
        data.load("synth-lin", n=20),
    ]
    root_free_mnist = data.Dataset(
        "mnist", "train", torch.arange(20 * 784).remainder(256).to(torch.uint8).reshape(20, 784), "uint8", 784, (28, 28),
        torch.zeros(20, 1), ["label"], [True], [10],
    )
    sets.append(root_free_mnist)
    for ds in sets:
        moved = ds.to(device)
        assert moved.x_raw.device.type == device and moved.factors.device.type == device
        assert len(moved) == 20 and moved.factor_names == ds.factor_names
        for index in ([0, 3, 3], torch.tensor([1, 2], device=device), slice(2, 5), 4, np.array([7])):
            x = moved.batch(index)
            assert x.dtype == torch.float32 and x.device.type == device and x.dim() == 2 and x.shape[1] == ds.input_dim
        if device != "meta":
            x = moved.batch(slice(None)).cpu()
            torch.testing.assert_close(x, ds.batch(slice(None)))
            if ds.image_shape is not None:
                assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
                assert x.max() == 1.0
    ds = sets[1]
    assert ds.to("cpu") is ds
    x = ds.batch(slice(0, 2))
    x += 100.0  # batches never alias the storage
    assert float(ds.x_raw[:2].max()) < 100.0
    with pytest.raises(TypeError):
        ds.batch(torch.tensor([0.5]))


def test_subset_is_drawn_with_split_seed_plus_one(rng):
    """``subset=n`` takes n positions of the split from ``default_rng(split_seed + 1)`` (documented),
    not from ``default_rng(split_seed)`` (the split's own permutation seed)."""
    seed = int(rng.integers(0, 2**31))
    ds = data.load("dsprites", split="test", subset=6, split_seed=seed)
    perm = np.random.default_rng(seed).permutation(dsprites.N_IMAGES)
    test_idx = np.sort(perm[: round(0.1 * dsprites.N_IMAGES)])
    pick = np.random.default_rng(seed + 1).choice(test_idx.size, size=6, replace=False)
    assert np.asarray(ds.meta["grid_index"]).tolist() == test_idx[np.sort(pick)].tolist()
    assert len(ds) == 6


def test_test_split_size_is_rounded_not_floored():
    """round(0.26 * 10) = 3 test items (flooring gives 2), the other 7 train; together all 10."""
    test = dsprites.split_indices(10, "test", 0.26)
    train = dsprites.split_indices(10, "train", 0.26)
    assert test.size == 3 and train.size == 7
    assert sorted(test.tolist() + train.tolist()) == list(range(10))
    assert dsprites.split_indices(20, "test", 0.19).size == 4  # 3.8 -> 4
