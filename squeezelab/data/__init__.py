"""Data for squeezelab: CIFAR-10/100 from the official archives (Krizhevsky 2009), ImageNet-style
class folders decoded once into a uint8 tensor cache, batched augmentation and a sharded batch
loader, in the manner of airbench (Jordan 2024, arXiv 2404.00498).

    data = load_split(resolve_default_cifar10(), "train", cache_dir=...)
    loader = BatchLoader(data, 512, train=True, augment="cifar", device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader: ...
"""
from squeezelab.data.augment import (
    crop_flip,
    cutout,
    normalize,
    random_crop_flip,
    random_cutout,
    random_flip,
    random_resized_crop,
    resized_crop,
    sample_resized_crop_boxes,
    to_float,
    to_normalized,
)
from squeezelab.data.loader import BatchLoader
from squeezelab.data.sources import load_split, resolve_default_cifar10
from squeezelab.data.types import DataError, ImageTensors

__all__ = [
    "BatchLoader",
    "DataError",
    "ImageTensors",
    "crop_flip",
    "cutout",
    "load_split",
    "normalize",
    "random_crop_flip",
    "random_cutout",
    "random_flip",
    "random_resized_crop",
    "resized_crop",
    "resolve_default_cifar10",
    "sample_resized_crop_boxes",
    "to_float",
    "to_normalized",
]
