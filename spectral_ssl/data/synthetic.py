"""Small labelled image data made on the spot, for tests, smoke runs and benchmarks."""

from __future__ import annotations

import datasets
import numpy as np
from PIL import Image


def synthetic_dataset(num_rows: int = 256, image_size: int = 32, num_classes: int = 4, seed: int = 0,
                      mode: str = "RGB") -> datasets.Dataset:
    """Small labelled image dataset for tests and smoke runs: class-dependent oriented stripes plus noise.

    Columns: ``image`` (PIL, ``mode``), ``label`` (0..num_classes-1), ``idx`` (0..num_rows-1).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    images, labels = [], []
    for i in range(num_rows):
        label = i % num_classes
        angle = np.pi * label / num_classes
        freq = 2 * np.pi * (2 + label) / image_size
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        colour = rng.uniform(0.4, 1.0, size=3) * (0.5 + 0.5 * np.eye(3)[label % 3])
        pixels = 127.5 + 100 * wave[..., None] * colour + rng.normal(0, 12, size=(image_size, image_size, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert(mode))
        labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=num_classes),
                                  "idx": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": images, "label": labels, "idx": list(range(num_rows))},
                                      features=features)
