"""Images in, batches out: one reader per source, decoding, epochs, the decoded-split cache, the eval loader.

- ``readers``: a Hub id or a local folder (parquet/arrow files, an image folder, a ``save_to_disk`` folder,
  webdataset tar shards) -> ``ImageData`` with canonical columns ``image`` (undecoded), ``label``, ``idx``
  (``load_images``); mistakes are ``DataKeyError`` (which split or column, and what exists) or a one-line
  ``FileNotFoundError`` naming the path.
- ``decode``: bytes/paths -> 8-bit RGB PIL images (``decode_image``) or fixed-size uint8 tensors (``Uint8Transform``).
- ``stream``: one epoch of one rank, deterministic given (seed, epoch, rank, world size), decoded in the main process
  or in DataLoader workers (``make_loader``).
- ``epochs``: what a run reads from (``EpochBatches``; ``EpochLoader``) and the per-batch seeding of augmentations on
  the device (``DeviceViews``).
- ``cache``: a split decoded once and served every epoch from one uint8 tensor in RAM or GPU memory
  (``DecodedSplit``, ``DecodedEpochLoader``, ``cache_device``).
- ``evaluation``: a split with a model's preprocessing (``eval_loader``).
- ``training_input``: a pretraining run's batches and where their views are made, chosen in one place (the cache,
  streamed with views on the device or in the loader; ``training_input``, ``TrainingInput``).
- ``synthetic``: small labelled data for tests (``synthetic_dataset``).
"""

from spectral_ssl.data.cache import AUTO_CACHE_BYTES, DecodedEpochLoader, DecodedSplit, cache_device, decoded_bytes
from spectral_ssl.data.decode import DECODE_ERRORS, Uint8Transform, UndecodableImageError, decode_image, to_uint8
from spectral_ssl.data.epochs import DeviceViews, EpochBatches, EpochLoader
from spectral_ssl.data.evaluation import eval_loader
from spectral_ssl.data.readers import (
    DATA_SUFFIXES,
    IMAGE_SUFFIXES,
    NO_LABEL,
    READERS,
    DataKeyError,
    ImageData,
    LabelsNotIntegerError,
    load_images,
    looks_local,
    num_rows,
    source_kind,
)
from spectral_ssl.data.stream import WORKER_CHUNK, collate_eval, collate_views, make_loader
from spectral_ssl.data.synthetic import synthetic_dataset
from spectral_ssl.data.training_input import TrainingInput, training_input
from spectral_ssl.transforms import (  # re-exported: the loader's transforms
    EVAL_INTERPOLATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TwoViewTransform,
)

__all__ = [
    "AUTO_CACHE_BYTES", "DATA_SUFFIXES", "DECODE_ERRORS", "EVAL_INTERPOLATION", "IMAGENET_MEAN", "IMAGENET_STD",
    "IMAGE_SUFFIXES", "NO_LABEL", "READERS", "WORKER_CHUNK", "DataKeyError", "DecodedEpochLoader", "DecodedSplit",
    "DeviceViews", "EpochBatches", "EpochLoader", "EvalTransform", "ImageData", "LabelsNotIntegerError",
    "TrainingInput", "TwoViewTransform",
    "UndecodableImageError", "Uint8Transform", "cache_device", "collate_eval", "collate_views", "decode_image",
    "decoded_bytes", "eval_loader", "load_images", "looks_local", "make_loader", "num_rows", "source_kind",
    "synthetic_dataset", "to_uint8", "training_input",
]
