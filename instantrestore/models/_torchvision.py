"""torchvision beside a torch it was not built for: PyPI's torchvision 0.28.0 beside the CPU torch 2.13.0 wheel
that `make install` takes (the zoo extra's spandrel needs torchvision; so do transformers and diffusers once it
is installed).

Its compiled ops are linked against the CUDA torch and do not load. torchvision supports that state (its ops
then raise "Couldn't load custom C++ ops"), except that 0.28 registers fake kernels for `nms` and `qnms`
without checking (pytorch/vision#9337), so `import torchvision` fails with "operator torchvision::nms does not
exist". Declaring those two operators' schemas, as torchvision's C++ library would, without kernels, lets it
import; nothing of torchvision is replaced, and nms still fails with torchvision's own message. With a
torchvision built for the installed torch, the import just succeeds and nothing is declared.
"""

from __future__ import annotations

import importlib
import sys

import torch

_schemas: torch.library.Library | None = None  # kept alive: the declarations last as long as it does


def import_torchvision() -> None:
    """Import torchvision, declaring the two schemas its 0.28 release needs when its compiled ops are missing;
    raises what `import torchvision` raises otherwise."""
    global _schemas
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err) or _schemas is not None:
            raise
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _schemas = library
    importlib.import_module("torchvision")
