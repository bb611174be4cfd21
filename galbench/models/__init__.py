"""Models: the registry (AlexNet variants, timm), weight sources and fine-tuning policies."""
