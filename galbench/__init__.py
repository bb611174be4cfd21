"""galbench: does pretraining pay off for galaxy-morphology classifiers, and by how much?"""

from galbench.errors import GalbenchError

__version__ = "0.1.0"

__all__ = ["GalbenchError", "__version__"]
