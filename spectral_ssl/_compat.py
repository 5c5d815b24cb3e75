"""Make PyPI torchvision (a CUDA build) importable beside the CPU-only torch wheel.

PyPI's torchvision for x86_64 is built against CUDA torch: its ``_C.so`` links ``libtorch_cuda.so`` /
``libc10_cuda.so``, which the CPU torch wheel lacks. The extension silently fails to load and
``torchvision/_meta_registrations.py`` then dies on ``register_fake("torchvision::nms")`` with "operator
torchvision::nms does not exist", which breaks ``import timm`` and parts of transformers. Defining the two op
schemas first lets the pure-Python parts (transforms, ops.misc, models) import; torchvision's C++ ops (nms,
roi_align, image decoding) stay unavailable, and nothing here uses them.

Acts only when torch is a CPU build *and* torchvision is a CUDA build. With CUDA torch it is a no-op: defining the
schemas a second time would abort the process. Must run before the first ``import torchvision`` / ``import timm``,
which is why ``spectral_ssl/__init__.py`` calls it first.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

_LIB = None


def ensure_torchvision_importable() -> bool:
    """Define torchvision's missing op schemas if needed. Returns True when the shim acted."""
    global _LIB
    if "torchvision" in sys.modules or _LIB is not None:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    if torch.version.cuda is not None:  # CUDA torch: torchvision loads fine
        return False
    version_py = pathlib.Path(spec.origin).with_name("version.py")
    if not version_py.exists() or "+cu" not in version_py.read_text():  # CPU torchvision: nothing to patch
        return False
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True
