"""galbench: does pretraining pay off for galaxy-morphology classifiers, and by how much?"""

__version__ = "0.1.0"

# The Python API: galbench.classify(...) returns an astropy Table. Imported here so that the function, not
# the module of the same name, is what `galbench.classify` means.
from galbench.classify import classify  # noqa: E402
from galbench.errors import GalbenchError  # noqa: E402

__all__ = ["GalbenchError", "__version__", "classify"]
