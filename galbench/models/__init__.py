"""Models: the registry (AlexNet variants, timm), weight sources and fine-tuning policies."""

from galbench.models import alexnet  # noqa: F401  (fills the registry)
