"""Ray, for the commands that can spread work over a cluster (suites and classification)."""

from __future__ import annotations

import os

from galbench.errors import GalbenchError


def connect_ray(address: str | None):
    """The `ray` module, connected to a cluster (`auto`, ray://HOST:PORT) or to a Ray started here."""
    try:
        import ray
    except ImportError:
        raise GalbenchError("the Ray executor needs Ray", fix="pip install 'galbench[ray]'") from None
    if not ray.is_initialized():
        cache = os.environ.get("GALBENCH_CACHE")
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"GALBENCH_CACHE": cache}} if cache else None)
        except Exception as exc:  # noqa: BLE001 - connection errors of several kinds
            raise GalbenchError(f"cannot reach the Ray cluster ({type(exc).__name__}: {exc})",
                                where=str(address or "local Ray")) from None
    return ray
