"""The restorers and their building blocks."""

import contextlib
import importlib.util

from instantrestore.models._torchvision import import_torchvision

# Before diffusers or transformers import it from deep inside (see _torchvision.py). A torchvision broken in
# another way fails where it is used, as it would without this.
if importlib.util.find_spec("torchvision") is not None:
    with contextlib.suppress(Exception):
        import_torchvision()
