"""The evaluation loader: a split with a model's preprocessing (resize, centre crop, normalise), one image per
sample, in order."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from spectral_ssl import transforms
from spectral_ssl.data.readers import load_images
from spectral_ssl.data.stream import make_loader
from spectral_ssl.transforms import Preprocessing


def eval_loader(dataset: str, split: str, preprocessing: Preprocessing | None = None, *, image_column: str = "image",
                label_column: str | None = "label", batch_size: int = 256, max_samples: int | None = None,
                skip_corrupt: bool = False, seed: int = 0, shuffle: bool = False, num_workers: int = 0,
                normalize: bool = True, **deprecated: Any) -> Iterable[dict]:
    """Evaluation batches of a split with a model's preprocessing (``transforms.Preprocessing``, e.g.
    ``Preprocessing.from_data_config(model.data_config)``: resize, centre crop, normalise): the loader the recipes'
    probes, the exported effective rank and the random-init baseline's BatchNorm calibration share.
    ``normalize=False`` yields the resized uint8 images instead (a quarter of the bytes, for images kept and reused);
    ``preprocessing.eval_transform().normalize`` turns a batch of them into the same floats.

    The former keywords ``image_size``, ``mean``, ``std``, ``interpolation`` still work in place of
    ``preprocessing`` (deprecated)."""
    if preprocessing is None:
        unknown = sorted(set(deprecated) - {"image_size", "mean", "std", "interpolation"})
        if unknown or "image_size" not in deprecated:
            raise TypeError(f"eval_loader needs preprocessing (a transforms.Preprocessing); got {sorted(deprecated)}")
        warnings.warn("eval_loader(image_size=, mean=, std=) is deprecated; pass "
                      "preprocessing=transforms.Preprocessing(image_size, mean, std)", DeprecationWarning, stacklevel=2)
        preprocessing = transforms.Preprocessing(
            deprecated["image_size"], tuple(deprecated.get("mean", transforms.IMAGENET_MEAN)),
            tuple(deprecated.get("std", transforms.IMAGENET_STD)),
            deprecated.get("interpolation") or transforms.EVAL_INTERPOLATION)
    elif deprecated:
        raise TypeError(f"eval_loader got unexpected keyword arguments {sorted(deprecated)}")
    images = load_images(dataset, split, streaming=True, image_column=image_column, label_column=label_column)
    transform = preprocessing.eval_transform(normalize=normalize)
    return make_loader(images, transform, batch_size=batch_size, shuffle=shuffle, drop_last=False,
                            collate="eval", skip_corrupt=skip_corrupt, max_samples=max_samples, seed=seed,
                            num_workers=num_workers)
