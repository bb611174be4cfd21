"""Files from the Hugging Face hub, through huggingface_hub's own cache (shared with timm and transformers).

The cache layout, as huggingface_hub writes it:
`<cache>/models--OWNER--NAME/refs/main` holds a commit hash; `snapshots/<hash>/FILE` is a symlink to
`blobs/<id>`, where a large (LFS) file's id is the SHA-256 of its content. galbench reads that layout
directly, checks a blob's content against its name where the name is a SHA-256, and downloads only when
the file is missing and `HF_HUB_OFFLINE` is not set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
    from huggingface_hub import errors, hf_hub_download, try_to_load_from_cache

    cache = hub_cache_dir()
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            return verified(Path(found))
    if _offline():
        return None
    # huggingface_hub >= 1.0 says RemoteEntryNotFoundError for a file the repository lacks, older
    # versions EntryNotFoundError; LocalEntryNotFoundError (no network) is a subclass of the latter.
    absent = tuple(c for c in (getattr(errors, "RemoteEntryNotFoundError", None), errors.EntryNotFoundError) if c)
    for filename in filenames:
        try:
            return verified(Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache)))
        except errors.LocalEntryNotFoundError:
            return None
        except absent:
            continue
        except Exception:  # noqa: BLE001 - no network, a proxy, an unknown repository: the caller says what to do
            return None
    return None


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
