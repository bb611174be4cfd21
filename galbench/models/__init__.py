"""Models: the registry (AlexNet variants, timm), weight sources and fine-tuning policies."""

from galbench.models import alexnet, timm_models  # noqa: F401  (fill the registry)
