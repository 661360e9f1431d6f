"""Training: one loop (`trainer.py`), two recipes (`recipes.py`), typed YAML configs (`config.py`)."""

# accelerate and diffusers import torchvision from deep inside: instantrestore.models must come first, so that
# a torchvision beside a torch it was not built for still imports (models/_torchvision.py).
import instantrestore.models  # noqa: F401
