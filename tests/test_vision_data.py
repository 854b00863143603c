"""Tests of the vision dataset loaders in tasks/vision/tasks.py.

The standard datasets are loaded through torchvision's real loaders (``datasets.MNIST``,
``datasets.FashionMNIST``, ``datasets.CIFAR10``, ``datasets.ImageFolder``) from tiny files that the
tests write under ``tmp_path`` in the real on-disk formats: raw IDX files for (Fashion-)MNIST, the
pickled ``cifar-10-batches-py`` batches for CIFAR-10 and PNG files in class folders for
``image_folder``. Nothing is downloaded. ``digits`` ships with scikit-learn.

Fixture sizes: (Fashion-)MNIST and CIFAR-10 get 190 training images, unevenly spread over the ten
classes (10/20/30 per class), so that the 10% stratified validation split holds exactly
count/10 images of every class (a 10% split of fewer than 100 images cannot hold all ten classes,
and scikit-learn refuses to make it).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image
from torchvision import datasets as tv_datasets

import tasks
from tasks import DatasetError, DatasetNotFoundError, create_task
from zoo.registry import RegistryError

# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

COUNTS = [10, 20, 30, 10, 20, 30, 10, 20, 30, 10]  # training images per class: 190 in all
N_TRAIN, N_TEST = sum(COUNTS), 10
N_VAL = N_TRAIN // 10  # what TorchvisionTask holds out: min(5000, N // 10)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _labels_with_counts(rng: np.random.Generator, counts: list[int]) -> np.ndarray:
    """Labels with ``counts[c]`` copies of class c, in shuffled order."""
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.uint8)


def _row_index(images: np.ndarray) -> dict[bytes, int]:
    """bytes of each image -> its index; the random fixture images must all be distinct."""
    index = {img.tobytes(): i for i, img in enumerate(images)}
    assert len(index) == len(images), "fixture images are not distinct"
    return index


def _indices_of(images: torch.Tensor, index: dict[bytes, int]) -> list[int]:
    """Map every image of a task split back to the index of the written image it equals."""
    found = [index.get(img.numpy().tobytes()) for img in images]
    assert None not in found, "a task image equals none of the written images"
    return found


def _denormalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Undo ``(x / 255 - mean) / std`` per channel and round back to uint8."""
    m = torch.tensor(mean)[:, None, None] * 255
    s = torch.tensor(std)[:, None, None] * 255
    return (x * s + m).round().clamp(0, 255).to(torch.uint8)


def _epoch(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


# ----------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: raw IDX files
# ----------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049  # 0x00000803 (uint8, 3 dims), 0x00000801 (uint8, 1 dim)


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", IDX_IMAGES_MAGIC, n, h, w) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", IDX_LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, seed: int = 0, files: tuple[str, ...] = ("train", "t10k")) -> dict:
    """The four raw files torchvision's MNIST reads: ``<root>/<folder>/raw/{train,t10k}-*-idx?-ubyte``."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {
        "train": (rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8), _labels_with_counts(rng, COUNTS)),
        "t10k": (rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8), rng.permutation(10).astype(np.uint8)),
    }
    for prefix in files:
        images, labels = written[prefix]
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return written


MNIST_CASES = [  # task name, torchvision folder, torchvision class
    pytest.param("mnist", "MNIST", tv_datasets.MNIST, id="mnist"),
    pytest.param("fashion_mnist", "FashionMNIST", tv_datasets.FashionMNIST, id="fashion_mnist"),
]


def test_idx_fixture_headers_follow_the_spec(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    head = (raw / "train-images-idx3-ubyte").read_bytes()[:16]
    assert head == b"\x00\x00\x08\x03" + struct.pack(">III", N_TRAIN, 28, 28)
    head = (raw / "t10k-labels-idx1-ubyte").read_bytes()[:8]
    assert head == b"\x00\x00\x08\x01" + struct.pack(">I", N_TEST)
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + N_TRAIN * 28 * 28


@pytest.mark.parametrize("name, folder, tv_class", MNIST_CASES)
def test_mnist_like_loads_raw_idx_files_exactly(tmp_path, name, folder, tv_class):
    written = _write_mnist(tmp_path, folder)
    task = create_task(name, data_dir=tmp_path, download=False)
    task.setup()

    for split in ("train", "val", "test"):
        assert task.images[split].dtype == torch.uint8
        assert task.images[split].shape[1:] == (1, 28, 28)
        assert task.labels[split].dtype == torch.int64
        assert len(task.labels[split]) == len(task.images[split])

    # test == the t10k files, pixel for pixel and in order
    test_images, test_labels = written["t10k"]
    assert torch.equal(task.images["test"][:, 0], torch.from_numpy(test_images))
    assert torch.equal(task.labels["test"], torch.from_numpy(test_labels).long())

    # train + val == the train files: disjoint, together everything, every label kept
    train_images, train_labels = written["train"]
    index = _row_index(train_images)
    idx = {s: _indices_of(task.images[s][:, 0], index) for s in ("train", "val")}
    assert len(idx["train"]) == N_TRAIN - N_VAL and len(idx["val"]) == N_VAL
    assert set(idx["train"]).isdisjoint(idx["val"])
    assert sorted(idx["train"] + idx["val"]) == list(range(N_TRAIN))
    for s in ("train", "val"):
        assert task.labels[s].tolist() == train_labels[idx[s]].tolist()

    # a known image: training image 0 is where the loader put it, unchanged
    where = "train" if 0 in idx["train"] else "val"
    assert torch.equal(task.images[where][idx[where].index(0), 0], torch.from_numpy(train_images[0]))

    # stratified: the uneven class counts are held out in exact proportion
    assert np.bincount(task.labels["val"].numpy(), minlength=10).tolist() == [c // 10 for c in COUNTS]
    assert np.bincount(task.labels["train"].numpy(), minlength=10).tolist() == [c - c // 10 for c in COUNTS]

    assert task.classes == list(tv_class.classes) and len(task.classes) == 10
    assert task.spec == {"kind": "classification", "modality": "image", "input_shape": (1, 28, 28), "num_classes": 10}
    assert task.num_train_samples() == N_TRAIN - N_VAL


@pytest.mark.parametrize("name, folder, tv_class", MNIST_CASES)
def test_mnist_like_batches_are_normalised_floats(tmp_path, name, folder, tv_class):
    _write_mnist(tmp_path, folder)
    task = create_task(name, data_dir=tmp_path)
    task.setup()
    # the task's own mean/std (which constants they should be: test_declared_normalisation_is_used)
    (mean,), (std,) = task.mean, task.std
    train_x, train_y = task.images["train"], task.labels["train"]

    batches = list(task.train_batches(32, torch.Generator().manual_seed(0)))
    assert len(batches) == -(-len(train_y) // 32)
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (32,)

    # one epoch: every training image exactly once, as (pixel / 255 - mean) / std, with its label
    x, y = _epoch(batches)
    index = _row_index(train_x.numpy())
    found = _indices_of(_denormalise(x, (mean,), (std,)), index)
    assert sorted(found) == list(range(len(train_y)))
    assert torch.equal(y, train_y[found])
    expected = (train_x[found].float() / 255 - mean) / std
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    assert found != sorted(found), "training batches are not shuffled"

    # the generator alone fixes the order (no augmentation for MNIST)
    x2, y2 = _epoch(task.train_batches(32, torch.Generator().manual_seed(0)))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _, y3 = _epoch(task.train_batches(32, torch.Generator().manual_seed(1)))
    assert not torch.equal(y, y3)

    # eval batches: the split in order, normalised the same way
    ex, ey = _epoch(task.eval_batches("test", 4))
    assert ex.shape == (N_TEST, 1, 28, 28) and ex.dtype == torch.float32
    assert torch.equal(ey, task.labels["test"])
    torch.testing.assert_close(ex, (task.images["test"].float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_mnist_and_fashion_mnist_read_their_own_folders(tmp_path):
    mnist = _write_mnist(tmp_path, "MNIST", seed=1)
    fashion = _write_mnist(tmp_path, "FashionMNIST", seed=2)
    a, b = create_task("mnist", data_dir=tmp_path), create_task("fashion_mnist", data_dir=tmp_path)
    a.setup()
    b.setup()
    assert torch.equal(a.images["test"][:, 0], torch.from_numpy(mnist["t10k"][0]))
    assert torch.equal(b.images["test"][:, 0], torch.from_numpy(fashion["t10k"][0]))
    assert a.classes[0] == "0 - zero" and b.classes[0] == "T-shirt/top"


# ----------------------------------------------------------------------------------------------
# CIFAR-10: the pickled batches of cifar-10-batches-py
# ----------------------------------------------------------------------------------------------

CIFAR_NAMES = [f"kind-{c}" for c in "abcdefghij"]  # not CIFAR's names: they must come from batches.meta


class _Py2Str(bytes):
    """A Python 2 ``str``. The official batches were pickled by Python 2: their keys (b"data",
    b"labels", ...) and names are py2 strings, which read back as ``bytes`` with
    ``encoding="bytes"`` (as the CIFAR page shows) and as ``str`` with ``encoding="latin1"``
    (as torchvision reads them)."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, so that dispatch can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj: _Py2Str) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _py2_pickle(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _write_cifar10(root: Path, seed: int = 0) -> dict:
    """data_batch_1..5, test_batch and batches.meta under ``<root>/cifar-10-batches-py``.

    Each batch: {b"batch_label", b"labels": list of int, b"data": uint8 (N, 3072), b"filenames"},
    a row being the 1024 red, then green, then blue values of a 32x32 image, row-major.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_data = rng.integers(0, 256, (N_TRAIN, 3072), dtype=np.uint8)
    train_labels = _labels_with_counts(rng, COUNTS).astype(np.int64)
    test_data = rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8)
    test_data[0] = np.repeat(np.array([255, 0, 0], dtype=np.uint8), 1024)  # test image 0: pure red
    test_labels = rng.permutation(10).astype(np.int64)

    def batch(label: str, data: np.ndarray, labels: np.ndarray) -> dict:
        return {_Py2Str(b"batch_label"): _Py2Str(label.encode()),
                _Py2Str(b"labels"): [int(v) for v in labels],
                _Py2Str(b"data"): data,
                _Py2Str(b"filenames"): [_Py2Str(f"img_{i:05d}.png".encode()) for i in range(len(labels))]}

    per_batch = N_TRAIN // 5
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        _py2_pickle(folder / f"data_batch_{b + 1}",
                    batch(f"training batch {b + 1} of 5", train_data[part], train_labels[part]))
    _py2_pickle(folder / "test_batch", batch("testing batch 1 of 1", test_data, test_labels))
    _py2_pickle(folder / "batches.meta", {_Py2Str(b"num_cases_per_batch"): per_batch,
                                          _Py2Str(b"label_names"): [_Py2Str(n.encode()) for n in CIFAR_NAMES],
                                          _Py2Str(b"num_vis"): 3072})
    return {"train": (train_data, train_labels), "test": (test_data, test_labels)}


@pytest.fixture
def cifar_without_md5(monkeypatch):
    """Fixture files cannot have the official md5 sums. torchvision checks them in two places:
    ``CIFAR10._check_integrity`` (the six batches) and ``_load_meta`` (batches.meta), both through
    the module function ``torchvision.datasets.cifar.check_integrity``. Patching that function to
    "the file exists" (md5 ignored) covers both and keeps the rest of the real loader running:
    the existence checks, the pickle parsing and the reshape/transpose to HWC."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar_fixture_is_in_the_documented_format(tmp_path):
    _write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # how the CIFAR page reads it
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (N_TRAIN // 5, 3072)
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")  # how torchvision reads it
    assert meta["label_names"] == CIFAR_NAMES


def test_cifar10_loads_batches_exactly(tmp_path, cifar_without_md5):
    written = _write_cifar10(tmp_path)
    task = create_task("cifar10", data_dir=tmp_path, download=False)
    task.setup()

    for split in ("train", "val", "test"):
        assert task.images[split].dtype == torch.uint8
        assert task.images[split].shape[1:] == (3, 32, 32)
    assert task.spec == {"kind": "classification", "modality": "image", "input_shape": (3, 32, 32), "num_classes": 10}
    assert task.classes == CIFAR_NAMES

    # channel order: a row is R plane, G plane, B plane -> (C, H, W) without any mixing
    test_data, test_labels = written["test"]
    assert torch.equal(task.images["test"], torch.from_numpy(test_data.reshape(-1, 3, 32, 32)))
    assert torch.equal(task.labels["test"], torch.from_numpy(test_labels))
    red = task.images["test"][0]
    assert (red[0] == 255).all() and (red[1:] == 0).all()
    some = torch.from_numpy(test_data[3])
    assert task.images["test"][3, 1, 5, 7] == some[1 * 1024 + 5 * 32 + 7]  # channel 1, row 5, column 7

    # train + val == the five batches, in that order of rows, split stratified and disjoint
    train_data, train_labels = written["train"]
    index = _row_index(train_data.reshape(-1, 3, 32, 32))
    idx = {s: _indices_of(task.images[s], index) for s in ("train", "val")}
    assert set(idx["train"]).isdisjoint(idx["val"])
    assert sorted(idx["train"] + idx["val"]) == list(range(N_TRAIN))
    for s in ("train", "val"):
        assert task.labels[s].tolist() == train_labels[idx[s]].tolist()
    assert np.bincount(task.labels["val"].numpy(), minlength=10).tolist() == [c // 10 for c in COUNTS]


def _crop_flip_variants(images: torch.Tensor, labels: torch.Tensor, pad: int) -> dict[bytes, tuple[int, bool, bool]]:
    """Every random-crop (zero padding ``pad``) and flip of every image: bytes -> (label, shifted, flipped)."""
    variants: dict[bytes, tuple[int, bool, bool]] = {}
    size = images.shape[-1]
    for img, label in zip(images, labels.tolist()):
        padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = padded[:, dy:dy + size, dx:dx + size]
                shifted = (dy, dx) != (pad, pad)
                for flipped, view in ((False, crop), (True, crop.flip(-1))):
                    variants.setdefault(view.contiguous().numpy().tobytes(), (label, shifted, flipped))
    return variants


def test_cifar10_training_batches_are_augmented_eval_batches_are_not(tmp_path, cifar_without_md5):
    _write_cifar10(tmp_path)
    task = create_task("cifar10", data_dir=tmp_path)
    task.setup()
    train_x, train_y = task.images["train"], task.labels["train"]

    torch.manual_seed(0)
    x, y = _epoch(task.train_batches(64, torch.Generator().manual_seed(0)))
    assert x.dtype == torch.float32 and x.shape == (len(train_y), 3, 32, 32)
    assert sorted(y.tolist()) == sorted(train_y.tolist())

    # same global seed and generator: the same augmented epoch
    torch.manual_seed(0)
    x_again, y_again = _epoch(task.train_batches(64, torch.Generator().manual_seed(0)))
    assert torch.equal(x, x_again) and torch.equal(y, y_again)

    # every augmented image is a crop (zero padding 4 = 32 // 8) and maybe a flip of a training
    # image of its own class; some are shifted, some flipped, so most differ from the originals
    augmented = _denormalise(x, task.mean, task.std)
    variants = _crop_flip_variants(train_x, train_y, pad=4)
    seen = [variants.get(img.numpy().tobytes()) for img in augmented]
    assert None not in seen, "an augmented image is no crop/flip of a training image"
    assert [label for label, _, _ in seen] == y.tolist()
    assert any(shifted for _, shifted, _ in seen) and any(flipped for _, _, flipped in seen)
    originals = set(_row_index(train_x.numpy()))
    assert sum(img.numpy().tobytes() not in originals for img in augmented) > len(augmented) // 2
    unaugmented = (train_x.float() - torch.tensor(task.mean)[:, None, None] * 255) / (
        torch.tensor(task.std)[:, None, None] * 255)
    assert not any(torch.allclose(x[:64], unaugmented[p:p + 64], atol=1e-4) for p in range(len(train_y) - 63))

    # eval batches: deterministic, in order, normalised, never augmented
    for split in ("val", "test"):
        first = _epoch(task.eval_batches(split, 4))
        second = _epoch(task.eval_batches(split, 4))
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
        assert torch.equal(_denormalise(first[0], task.mean, task.std), task.images[split])
        assert torch.equal(first[1], task.labels[split])


def test_cifar10_with_a_batch_missing_is_not_found(tmp_path, cifar_without_md5):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="--download"):
        create_task("cifar10", data_dir=tmp_path).setup()


# ----------------------------------------------------------------------------------------------
# missing data, no download
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"),
                                          ("cifar10", "cifar-10-batches-py")])
def test_missing_dataset_raises_dataset_not_found(tmp_path, name, folder):
    task = create_task(name, data_dir=tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        task.setup()
    message = str(info.value)
    assert "--download" in message and folder in message
    assert isinstance(info.value, RuntimeError)
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing created


def test_incomplete_or_misplaced_mnist_is_not_found(tmp_path):
    _write_mnist(tmp_path / "a", "MNIST", files=("train",))  # no t10k files
    with pytest.raises(DatasetNotFoundError, match="--download"):
        create_task("mnist", data_dir=tmp_path / "a").setup()
    _write_mnist(tmp_path / "b", "FashionMNIST")  # Fashion-MNIST is no MNIST
    with pytest.raises(DatasetNotFoundError, match="--download"):
        create_task("mnist", data_dir=tmp_path / "b").setup()


# ----------------------------------------------------------------------------------------------
# image_folder: PNG files in class folders
# ----------------------------------------------------------------------------------------------

MODES = ["RGB", "L", "RGBA", "RGB", "L"]
SIZES = [(7, 11), (20, 9), (33, 40), (16, 16), (24, 13)]  # (width, height)


def _colour(key: int, mode: str) -> tuple[int, ...]:
    """A solid colour whose first channel (4 + 7 * key) identifies the image."""
    r = 4 + 7 * key
    return {"RGB": (r, 250 - 3 * key, 90 + key), "L": (r,), "RGBA": (r, 30 + 2 * key, 200 - key, 100)}[mode]


def _as_rgb(key: int, mode: str) -> tuple[int, int, int]:
    c = _colour(key, mode)
    return (c[0],) * 3 if mode == "L" else c[:3]  # ImageFolder's loader converts to RGB: grey repeats, alpha goes


def _write_class_folders(root: Path, counts: dict[str, int], first_key: int = 0) -> dict[int, tuple[str, str]]:
    """``root/<class>/img_<key>.png``, solid colours; returns key -> (class, mode)."""
    written, key = {}, first_key
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for _ in range(n):
            mode, size = MODES[key % len(MODES)], SIZES[key % len(SIZES)]
            colour = _colour(key, mode)
            Image.new(mode, size, colour if len(colour) > 1 else colour[0]).save(root / cls / f"img_{key:02d}.png")
            written[key] = (cls, mode)
            key += 1
    return written


def _keys_of(task, split: str, written: dict[int, tuple[str, str]]) -> list[int]:
    """Identify each image of a split by its colour, checking it is exactly that solid colour."""
    keys = []
    for img in task.images[split]:
        key, rest = divmod(int(img[0, 0, 0]) - 4, 7)
        assert rest == 0 and key in written, f"unknown colour {img[:, 0, 0].tolist()}"
        expected = torch.tensor(_as_rgb(key, written[key][1]), dtype=torch.uint8)[:, None, None]
        assert torch.equal(img, expected.expand_as(img)), f"image {key} is not its solid colour"
        keys.append(key)
    return keys


FLAT_CLASSES = {"zebra": 10, "Apple": 10, "mango": 10}


def test_image_folder_flat_layout_split_70_10_20(tmp_path):
    written = _write_class_folders(tmp_path, FLAT_CLASSES)
    task = create_task("image_folder", data_dir=tmp_path, image_size=16)
    task.setup()

    assert task.classes == ["Apple", "mango", "zebra"]  # sorted by name, as ImageFolder sorts
    assert task.spec == {"kind": "classification", "modality": "image", "input_shape": (3, 16, 16), "num_classes": 3}
    keys = {}
    for split in ("train", "val", "test"):
        assert task.images[split].dtype == torch.uint8 and task.images[split].shape[1:] == (3, 16, 16)
        keys[split] = _keys_of(task, split, written)
        assert [task.classes[i] for i in task.labels[split].tolist()] == [written[k][0] for k in keys[split]]
        assert len(set(keys[split])) == len(keys[split])
    assert [len(keys[s]) for s in ("train", "val", "test")] == [21, 3, 6]
    assert sorted(keys["train"] + keys["val"] + keys["test"]) == sorted(written)
    for split, per_class in (("train", 7), ("val", 1), ("test", 2)):
        assert np.bincount(task.labels[split].numpy(), minlength=3).tolist() == [per_class] * 3

    x, y = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 16, 16) and y.shape == (8,)
    ex, ey = _epoch(task.eval_batches("test", 4))
    assert torch.equal(_denormalise(ex, task.mean, task.std), task.images["test"])
    assert torch.equal(ey, task.labels["test"])


def test_image_folder_default_image_size_is_32(tmp_path):
    _write_class_folders(tmp_path, {"a": 10, "b": 10})
    task = create_task("image_folder", data_dir=tmp_path)
    task.setup()
    assert task.spec == {"kind": "classification", "modality": "image", "input_shape": (3, 32, 32), "num_classes": 2}


@pytest.mark.parametrize("held_out", ["val", "test"])
def test_image_folder_train_and_held_out_folders(tmp_path, held_out):
    train = _write_class_folders(tmp_path / "train", FLAT_CLASSES)
    other = _write_class_folders(tmp_path / held_out, {c: 2 for c in FLAT_CLASSES}, first_key=len(train))
    written = {**train, **other}
    task = create_task("image_folder", data_dir=tmp_path, image_size=12)
    task.setup()

    assert task.classes == ["Apple", "mango", "zebra"]
    assert task.spec["input_shape"] == (3, 12, 12)
    keys = {s: _keys_of(task, s, written) for s in ("train", "val", "test")}
    assert sorted(keys["test"]) == sorted(other)  # the given held-out folder is the test split, as is
    assert sorted(keys["train"] + keys["val"]) == sorted(train)  # val: 10% of train/, stratified
    assert len(set(keys["train"]) | set(keys["val"])) == len(train)
    assert np.bincount(task.labels["val"].numpy(), minlength=3).tolist() == [1, 1, 1]
    for split in ("train", "val", "test"):
        assert [task.classes[i] for i in task.labels[split].tolist()] == [written[k][0] for k in keys[split]]


def test_image_folder_uses_test_folder_when_train_val_and_test_exist(tmp_path):
    train = _write_class_folders(tmp_path / "train", {"a": 10, "b": 10})
    val = _write_class_folders(tmp_path / "val", {"a": 2, "b": 2}, first_key=20)
    test = _write_class_folders(tmp_path / "test", {"a": 3, "b": 3}, first_key=24)
    written = {**train, **val, **test}
    task = create_task("image_folder", data_dir=tmp_path, image_size=8)
    task.setup()
    assert sorted(_keys_of(task, "test", written)) == sorted(test)
    assert sorted(_keys_of(task, "val", written)) == sorted(val)
    assert sorted(_keys_of(task, "train", written)) == sorted(train)


def test_image_folder_with_only_a_train_folder_splits_it(tmp_path):
    train = _write_class_folders(tmp_path / "train", {"a": 10, "b": 10})
    task = create_task("image_folder", data_dir=tmp_path, image_size=8)
    task.setup()
    assert task.classes == ["a", "b"]
    assert sum(len(task.labels[s]) for s in ("train", "val", "test")) == len(train)


def test_image_folder_with_too_few_images_of_a_class_is_a_dataset_error(tmp_path):
    _write_class_folders(tmp_path, {"a": 10, "b": 1})
    with pytest.raises(DatasetError, match="cannot split 11 examples of 2 classes"):
        create_task("image_folder", data_dir=tmp_path, image_size=8).setup()


def test_image_folder_held_out_with_other_classes_is_rejected(tmp_path):
    _write_class_folders(tmp_path / "train", {"a": 10, "b": 10})
    _write_class_folders(tmp_path / "val", {"a": 2, "c": 2}, first_key=20)
    with pytest.raises(DatasetError, match=r"has classes \['a', 'c'\], the training folder \['a', 'b'\]"):
        create_task("image_folder", data_dir=tmp_path, image_size=8).setup()


@pytest.mark.parametrize("layout", ["missing", "empty", "class folders without images"])
def test_image_folder_without_images_raises_dataset_not_found(tmp_path, layout):
    root = tmp_path / "images"
    if layout != "missing":
        root.mkdir()
    if layout == "class folders without images":
        (root / "cats").mkdir()
        (root / "cats" / "notes.txt").write_text("no image here")
    with pytest.raises(DatasetNotFoundError, match="image_folder"):
        create_task("image_folder", data_dir=root).setup()


def test_torchvision_fingerprints_cover_the_files_torchvision_reads(tmp_path, cifar_without_md5):
    _write_mnist(tmp_path, "MNIST")
    _write_cifar10(tmp_path)
    for name, files, read in (("mnist", 4, "MNIST/raw/t10k-labels-idx1-ubyte"),
                              ("cifar10", 7, "cifar-10-batches-py/test_batch")):
        task = create_task(name, data_dir=tmp_path)
        task.setup()
        fingerprint = task.fingerprint()
        assert fingerprint["files"] == files and fingerprint["bytes"] > 0, name
        (tmp_path / "MNIST" / "notes.txt").write_text("not read")  # changes nothing
        assert create_task(name, data_dir=tmp_path).fingerprint() == fingerprint
        with open(tmp_path / read, "ab") as f:  # a file torchvision reads, changed
            f.write(b"\0")
        assert create_task(name, data_dir=tmp_path).fingerprint()["digest"] != fingerprint["digest"], name


def test_unknown_task_option_is_rejected(tmp_path):
    with pytest.raises(RegistryError, match="img_size") as info:
        create_task("image_folder", data_dir=tmp_path, img_size=16)
    assert "image_size" in str(info.value)  # the accepted options are named
    with pytest.raises(RegistryError, match="image_size"):
        create_task("mnist", data_dir=tmp_path, image_size=16)
    assert tasks.base.RegistryError is RegistryError


# ----------------------------------------------------------------------------------------------
# normalisation constants
# ----------------------------------------------------------------------------------------------

DECLARED_NORMALISATION = {  # what tasks/vision/tasks.py declares on each class: (mean, std) of pixel / 255
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "image_folder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@pytest.mark.parametrize("name", list(DECLARED_NORMALISATION))
def test_declared_normalisation_is_used(tmp_path, request, name):
    options = {}
    if name in ("mnist", "fashion_mnist"):
        _write_mnist(tmp_path, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name])
    elif name == "cifar10":
        request.getfixturevalue("cifar_without_md5")
        _write_cifar10(tmp_path)
    else:
        _write_class_folders(tmp_path, {"a": 10, "b": 10})
        options = {"image_size": 8}
    task = create_task(name, data_dir=tmp_path, **options)
    task.setup()
    mean, std = (torch.tensor(v)[:, None, None] for v in DECLARED_NORMALISATION[name])
    x, _ = _epoch(task.eval_batches("test", 8))
    torch.testing.assert_close(x, (task.images["test"].float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# digits (offline)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_pair():
    a, b = create_task("digits"), create_task("digits")
    a.setup()
    b.setup()
    return a, b


def test_digits_split_sizes_disjoint_and_stratified(digits_pair):
    from sklearn.datasets import load_digits

    task = digits_pair[0]
    assert {s: len(task.labels[s]) for s in ("train", "val", "test")} == {"train": 1257, "val": 180, "test": 360}
    assert task.spec == {"kind": "classification", "modality": "image", "input_shape": (1, 8, 8), "num_classes": 10}
    assert task.classes == [str(c) for c in range(10)]

    # the three splits partition the 1,797 images: the multiset of (image, label) is the whole
    digits = load_digits()
    whole = Counter((img.astype(np.float32).tobytes(), int(y)) for img, y in zip(digits.images, digits.target))
    parts = Counter()
    for s in ("train", "val", "test"):
        parts.update((img[0].numpy().tobytes(), int(y)) for img, y in zip(task.images[s], task.labels[s]))
    assert parts == whole

    overall = np.bincount(digits.target, minlength=10) / len(digits.target)
    for s in ("train", "val", "test"):
        share = np.bincount(task.labels[s].numpy(), minlength=10) / len(task.labels[s])
        assert np.abs(share - overall).max() < 0.02, s


def test_digits_is_deterministic_across_instances(digits_pair):
    a, b = digits_pair
    for s in ("train", "val", "test"):
        assert torch.equal(a.images[s], b.images[s]) and torch.equal(a.labels[s], b.labels[s])
    xa, ya = _epoch(a.train_batches(64, torch.Generator().manual_seed(3)))
    xb, yb = _epoch(b.train_batches(64, torch.Generator().manual_seed(3)))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_digits_training_set_is_normalised(digits_pair):
    task = digits_pair[0]
    x, y = _epoch(task.train_batches(64, torch.Generator().manual_seed(0)))
    assert x.dtype == torch.float32 and x.shape == (1257, 1, 8, 8)
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1) < 1e-3
    assert sorted(y.tolist()) == sorted(task.labels["train"].tolist())
    ex, ey = _epoch(task.eval_batches("val", 64))
    ex2, _ = _epoch(task.eval_batches("val", 64))
    assert ex.shape == (180, 1, 8, 8) and torch.equal(ex, ex2) and torch.equal(ey, task.labels["val"])


def test_batched_crop_and_flip_is_a_random_crop_of_the_padded_image_flipped_or_not():
    from tasks.vision.tasks import random_crop_flip
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, padding=2)
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips = offsets = 0
    for img, src in zip(out, padded):
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                 if torch.equal(img, (src[:, dy:dy + 8, dx:dx + 8].flip(-1) if f else src[:, dy:dy + 8, dx:dx + 8]))]
        assert found, "every output is a crop of the zero-padded image, flipped or not"
        flips += found[0][2]
        offsets += found[0][:2] != (2, 2)
    assert 16 < flips < 48 and offsets > 40  # per-image draws: about half flipped, most moved
