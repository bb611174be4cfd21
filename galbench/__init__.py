"""galbench: does pretraining pay off for galaxy-morphology classifiers, and by how much?"""

from galbench.errors import GalbenchError

__version__ = "0.1.0"

__all__ = ["GalbenchError", "__version__", "classify"]


def __getattr__(name: str):
    # `galbench.classify(...)` without importing torch for every `galbench --help`
    if name == "classify":
        from galbench.classify import classify

        return classify
    raise AttributeError(name)
