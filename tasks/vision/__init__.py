"""Vision: image classification (digits offline; MNIST, Fashion-MNIST, CIFAR-10, your own image folders)."""

from .tasks import (CIFAR10, MNIST, Digits, FashionMNIST, ImageClassificationTask, ImageFolder, TorchvisionTask,
                    stratified_split)

__all__ = ["CIFAR10", "MNIST", "Digits", "FashionMNIST", "ImageClassificationTask", "ImageFolder", "TorchvisionTask",
           "stratified_split"]
