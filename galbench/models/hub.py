"""Files from the Hugging Face hub, through huggingface_hub's own cache (shared with timm and transformers).

The cache layout, as huggingface_hub writes it:
`<cache>/models--OWNER--NAME/refs/main` holds a commit hash; `snapshots/<hash>/FILE` is a symlink to
`blobs/<id>`, where a large (LFS) file's id is the SHA-256 of its content. galbench reads that layout
directly, checks a blob's content against its name where the name is a SHA-256, and downloads only when
the file is missing, `HF_HUB_OFFLINE` is not set and the hub's host name resolves.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from galbench.errors import GalbenchError
from galbench.fileio import file_sha256


def hub_cache_dir() -> Path:
    """The hub cache as huggingface_hub resolves it: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.

    Read at each call (huggingface_hub reads it once, at import).
    """
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    default = os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.environ.get("HF_HUB_CACHE") or default)).expanduser()


def repo_folder(repo_id: str) -> Path:
    """A model repository's folder in the hub cache."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_file(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> Path | None:
    """The first of `filenames` in a hub repository: cached, else downloaded unless offline; None if neither."""
    from huggingface_hub import constants, errors, hf_hub_download, try_to_load_from_cache

    cache = hub_cache_dir()
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            return verified(Path(found))
    if _offline() or not _resolvable(constants.ENDPOINT):
        return None
    # huggingface_hub >= 1.0 says RemoteEntryNotFoundError for a file the repository lacks, older
    # versions EntryNotFoundError; LocalEntryNotFoundError (no network) is a subclass of the latter.
    absent = tuple(c for c in (getattr(errors, "RemoteEntryNotFoundError", None), errors.EntryNotFoundError) if c)
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its retries log a warning each; the caller's one line says what to do
    try:
        for filename in filenames:
            try:
                downloaded = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache))
            except errors.LocalEntryNotFoundError:
                return None
            except absent:
                continue
            except Exception:  # noqa: BLE001 - a proxy, an unknown repository, a server error
                return None
            return verified(downloaded)  # outside the try: a corrupt download says so, not "not cached"
    finally:
        logger.setLevel(level)
    return None


def _resolvable(endpoint: str) -> bool:
    """Whether the hub's host name resolves (or a proxy will do it): an offline machine learns so at once,
    not after huggingface_hub's minute of retries."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.getaddrinfo(urlparse(endpoint).hostname, 443)
    except (OSError, UnicodeError):
        return False
    return True


def verified(path: Path) -> Path:
    """`path`, after checking a cached blob's content against its name where that name is a SHA-256."""
    blob = path.resolve()
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        digest = file_sha256(blob)
        if digest != blob.name:
            raise GalbenchError(f"corrupt file: its SHA-256 is {digest[:12]}..., the hub cache names it "
                                f"{blob.name[:12]}... (a truncated download?)", where=str(path),
                                fix=f"delete {blob} and fetch it again")
    return path
