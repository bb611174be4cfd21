"""galbench: does pretraining pay off for galaxy-morphology classifiers, and by how much?"""

__version__ = "0.2.0"

# The Python API: galbench.classify(...) returns an astropy Table.
from galbench.errors import GalbenchError  # noqa: E402
from galbench.inference.classify import classify  # noqa: E402

__all__ = ["GalbenchError", "__version__", "classify"]
