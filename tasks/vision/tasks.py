"""Vision tasks: image classification.

- ``digits`` (offline, default): scikit-learn's 1,797 8x8 handwritten digits, a fixed stratified
  70/10/20 train/val/test split.
- ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's datasets from ``--data-dir``, fetched
  only with ``--download``. CIFAR-10 trains with the standard random crop (padding 4) and flip.
- ``image_folder``: your own images, one folder per class (torchvision ``ImageFolder``), e.g.
  ``--task image_folder --data-dir PATH``; ``train/`` and ``val/``/``test/`` sub-folders are used
  as given, otherwise the images are split 70/10/20, stratified. Fewer than two classes, a split left
  empty, or a file that is not an image is a ``DatasetError`` at ``setup``.

Images are held in memory as uint8 tensors and batched without a DataLoader; each batch is converted
to float and normalised on the fly (and augmented, for training, where the task says so), with the
normalisation's mean and std held as tensors beside the images (moved to the device with them), so
that a training step makes no host-to-device copy of them.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torchvision import datasets
from PIL import Image
from torchvision.transforms import v2

from ..base import (Batch, Budget, ClassificationTask, DatasetError, DatasetNotFoundError, Option, TensorBatches,
                   files_fingerprint, register_task)


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed stratified train/val/test index split (fractions of the whole; ``test`` may be 0)."""
    index = np.arange(len(labels))
    try:
        rest, test_idx = (train_test_split(index, test_size=test, stratify=labels, random_state=seed) if test
                          else (index, index[:0]))
        train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), stratify=labels[rest],
                                              random_state=seed)
    except ValueError as e:  # too few examples of a class, or too few for every class to get one
        raise DatasetError(f"cannot split {len(labels)} examples of {len(np.unique(labels))} classes "
                           f"stratified into train/val/test: {e}") from None
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


def random_crop_flip(images: Tensor, padding: int) -> Tensor:
    """torchvision's ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip()``, drawn per image,
    for a whole batch (B, C, H, W) at once on its device: zero padding, a uniform offset in
    [0, 2 * padding] per axis, a flip with probability 1/2; one gather, no per-image Python."""
    B, C, H, W = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (B, C, H + 2p, W + 2p), zeros
    dy, dx = torch.randint(0, 2 * padding + 1, (2, B, 1), device=device)
    flip = torch.rand(B, 1, device=device) < 0.5
    cols = torch.arange(W, device=device)
    cols = torch.where(flip, W - 1 - cols, cols) + dx  # (B, W): a flip reads the columns backwards
    rows = torch.arange(H, device=device) + dy  # (B, H)
    batch = torch.arange(B, device=device)[:, None, None, None]
    channel = torch.arange(C, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class ImageClassificationTask(ClassificationTask):
    """Images in memory: ``self.images[split]`` uint8 (N, C, H, W), ``self.labels[split]`` int64 (N,).

    Subclasses fill ``images``, ``labels``, ``classes``, ``mean`` and ``std`` in ``_load``; ``setup`` then
    makes ``norm`` (the mean and std as (C, 1, 1) tensors on the pixel scale), held with the images.
    ``augment`` turns on random crop (padding H/8) and horizontal flip for training batches.
    """

    domain = "vision"
    modality = "image"
    augment: ClassVar[bool] = False
    held = ("images", "labels", "norm")
    max_value: ClassVar[float] = 255.0
    mean: tuple[float, ...] = (0.5,)  # per channel, on the 0..1 scale; subclasses set their own
    std: tuple[float, ...] = (0.5,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images: dict[str, Tensor] = {}
        self.labels: dict[str, Tensor] = {}
        self.classes: list[str] = []
        self.norm: dict[str, Tensor] = {}

    def setup(self) -> None:
        if not self.images:
            self._load()
            self.norm = {"mean": torch.tensor([m * self.max_value for m in self.mean]).view(-1, 1, 1),
                         "std": torch.tensor([s * self.max_value for s in self.std]).view(-1, 1, 1)}

    @abstractmethod
    def _load(self) -> None:
        """Fill images, labels, classes (and mean/std where they are computed)."""

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "modality": self.modality, "input_shape": tuple(self.images["train"].shape[1:]),
                "num_classes": len(self.classes)}

    def num_train_samples(self) -> int:
        return len(self.labels["train"])

    def _to_float(self, x: Tensor) -> Tensor:  # uint8/float (B, C, H, W) -> normalised float
        return (x.float() - self.norm["mean"]) / self.norm["std"]  # torchvision's Normalize, constants held

    def _train_transform(self) -> Callable[[Tensor], Tensor]:
        if not self.augment:
            return self._to_float
        padding = self.images["train"].shape[-1] // 8
        return lambda x: self._to_float(random_crop_flip(x, padding))

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterable[Batch]:
        return TensorBatches((self.images["train"], self.labels["train"]), batch_size,
                             generator=generator, transform=self._train_transform())

    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        return TensorBatches((self.images[split], self.labels[split]), batch_size, transform=self._to_float)

    def _set_split(self, name: str, images: Tensor, labels: Tensor) -> None:
        self.images[name], self.labels[name] = images, labels

    def _set_splits(self, images: Tensor, labels: Tensor, split: dict[str, np.ndarray]) -> None:
        for name, idx in split.items():
            index = torch.from_numpy(idx)
            self.images[name], self.labels[name] = images[index], labels[index]


@register_task
class Digits(ImageClassificationTask):
    name = "digits"
    target = 0.95  # validation top1: time_to_target_s
    report = replace(ImageClassificationTask.report,
                     description="scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes); offline")
    offline = default = True
    budget = Budget(epochs=60, batch_size=64)
    label_smoothing = 0.1
    max_value = 16.0  # pixel values are 0..16

    def _load(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32))[:, None]  # (N, 1, 8, 8) in 0..16
        labels = torch.from_numpy(digits.target.astype(np.int64))
        split = stratified_split(digits.target, val=0.1, test=0.2)
        self._set_splits(images, labels, split)
        train = self.images["train"] / self.max_value
        self.mean, self.std = (train.mean().item(),), (train.std().item(),)
        self.classes = [str(c) for c in digits.target_names]


class TorchvisionTask(ImageClassificationTask):
    """A torchvision dataset with an official train/test split; val is 5,000 training images."""

    dataset: ClassVar[Callable[..., Any]]
    folder: ClassVar[str]  # what torchvision creates under the data dir, for the error message
    files: ClassVar[tuple[str, ...]]  # the files torchvision reads, relative to the data dir (the fingerprint's)

    def data_fingerprint(self) -> dict[str, Any]:
        return files_fingerprint(self.data_dir, [self.data_dir / f for f in self.files])

    def _open(self, train: bool) -> Any:
        try:
            return self.dataset(root=str(self.data_dir), train=train, download=self.download)
        except RuntimeError as e:
            if self.download:
                raise
            raise DatasetNotFoundError(
                f"{self.name}: no dataset under {self.data_dir / self.folder}; add --download to fetch it, "
                f"or point --data-dir at the folder that holds {self.folder}/") from e

    def _load(self) -> None:
        train, test = self._open(True), self._open(False)
        x_train, y_train = self._as_tensors(train)
        x_test, y_test = self._as_tensors(test)
        split = stratified_split(y_train.numpy(), val=min(5000, len(y_train) // 10) / len(y_train), test=0.0)
        self._set_splits(x_train, y_train, {k: v for k, v in split.items() if k != "test"})
        self._set_split("test", x_test, y_test)
        self.classes = list(train.classes)

    @staticmethod
    def _as_tensors(ds: Any) -> tuple[Tensor, Tensor]:
        data = torch.as_tensor(np.asarray(ds.data))  # MNIST: (N, H, W); CIFAR: (N, H, W, C)
        data = data[:, None] if data.dim() == 3 else data.permute(0, 3, 1, 2)
        return data.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def _idx_files(folder: str) -> tuple[str, ...]:
    """The four raw IDX files that torchvision's MNIST-like datasets read from ``folder/raw``."""
    return tuple(f"{folder}/raw/{split}-{part}" for split in ("train", "t10k")
                 for part in ("images-idx3-ubyte", "labels-idx1-ubyte"))


@register_task
class MNIST(TorchvisionTask):
    name = "mnist"
    report = replace(TorchvisionTask.report, description="MNIST handwritten digits (60k/10k, 28x28); --download")
    dataset, folder = datasets.MNIST, "MNIST"
    files = _idx_files("MNIST")
    budget = Budget(epochs=5, batch_size=128)
    mean, std = (0.1307,), (0.3081,)


@register_task
class FashionMNIST(TorchvisionTask):
    name = "fashion_mnist"
    report = replace(TorchvisionTask.report, description="Fashion-MNIST clothing images (60k/10k, 28x28); --download")
    dataset, folder = datasets.FashionMNIST, "FashionMNIST"
    files = _idx_files("FashionMNIST")
    budget = Budget(epochs=10, batch_size=128)
    mean, std = (0.2860,), (0.3530,)


@register_task
class CIFAR10(TorchvisionTask):
    name = "cifar10"
    report = replace(TorchvisionTask.report,
                     description="CIFAR-10 (50k/10k, 32x32 RGB), random crop + flip; --download")
    dataset, folder = datasets.CIFAR10, "cifar-10-batches-py"
    files = tuple(f"cifar-10-batches-py/{name}" for name in
                  (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"))
    budget = Budget(epochs=30, batch_size=128)
    augment = True
    label_smoothing = 0.1
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@register_task
class ImageFolder(ImageClassificationTask):
    name = "image_folder"
    report = replace(ImageClassificationTask.report,
                     description="your own images in class folders (--data-dir PATH); resized to image_size")
    local_data = True
    options = {"image_size": Option(32, minimum=1, help="pixels of the side every image is resized and "
                                                          "centre-cropped to")}
    budget = Budget(epochs=30, batch_size=64)
    augment = True
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files: list[Path] = []  # every image read, for the fingerprint

    def data_fingerprint(self) -> dict[str, Any]:
        self.setup()
        return files_fingerprint(self.data_dir, self.files)

    def _read(self, root: Path) -> tuple[Tensor, Tensor, list[str]]:
        size = self.opts["image_size"]
        transform = v2.Compose([v2.PILToTensor(), v2.Resize(size), v2.CenterCrop(size)])
        try:
            ds = datasets.ImageFolder(str(root), transform=transform)
        except (FileNotFoundError, RuntimeError) as e:  # no folder, or folders without images
            raise DatasetNotFoundError(f"image_folder: no images in class folders under {root} ({e})") from e
        images = []
        for i, (path, _) in enumerate(ds.samples):
            try:
                img, _ = ds[i]
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:  # PIL's errors
                raise DatasetError(f"image_folder: cannot read {path} as an image ({e})") from None
            images.append(img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3])
        self.files += [Path(path) for path, _ in ds.samples]
        return torch.stack(images), torch.as_tensor(ds.targets, dtype=torch.int64), ds.classes

    def _load(self) -> None:
        """train/ + test/ (+ val/), or train/ + val/ (val/ is then the test split), or one folder to split."""
        root, self.files = self.data_dir, []
        if root.exists() and not root.is_dir():
            raise DatasetError(f"image_folder: {root} is a file, not a folder; point --data-dir at a folder of "
                               f"class folders of images (ROOT/<class>/*.png or ROOT/train/<class>/...)")
        train_dir = root / "train"
        val_dir, test_dir = root / "val", root / "test"
        if train_dir.is_dir() and (val_dir.is_dir() or test_dir.is_dir()):
            held_out = test_dir if test_dir.is_dir() else val_dir
            x_train, y_train, self.classes = self._read_training(train_dir)
            self._set_split("test", *self._read_like(held_out))
            if held_out is test_dir and val_dir.is_dir():
                self._set_split("train", x_train, y_train)
                self._set_split("val", *self._read_like(val_dir))
            else:
                split = self._split(train_dir, y_train, test=0.0)
                self._set_splits(x_train, y_train, {k: v for k, v in split.items() if k != "test"})
        else:
            folder = train_dir if train_dir.is_dir() else root
            images, labels, self.classes = self._read_training(folder)
            self._set_splits(images, labels, self._split(folder, labels, test=0.2))
        for split, labels in self.labels.items():
            if not len(labels):
                raise DatasetError(f"image_folder: the {split} split of {root} is empty; add images, or give "
                                   f"train/ with val/ or test/ folders")

    def _read_training(self, folder: Path) -> tuple[Tensor, Tensor, list[str]]:
        images, labels, classes = self._read(folder)
        if len(classes) < 2:
            raise DatasetError(f"image_folder: {folder} has {len(classes)} class folder ({', '.join(classes)}); "
                               f"classification needs at least two")
        return images, labels, classes

    @staticmethod
    def _split(folder: Path, labels: Tensor, test: float) -> dict[str, np.ndarray]:
        try:
            return stratified_split(labels.numpy(), val=0.1, test=test)
        except DatasetError as e:
            raise DatasetError(f"image_folder: {folder}: {e}") from None

    def _read_like(self, folder: Path) -> tuple[Tensor, Tensor]:
        images, labels, classes = self._read(folder)
        if classes != self.classes:
            raise DatasetError(f"image_folder: {folder} has classes {classes}, the training folder {self.classes}")
        return images, labels

