"""Atomic writes and content hashes: nothing half-written, caches keyed by what made them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from galbench.errors import GalbenchError


def _process_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import, not from worker threads
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


# OS errors a user can act on: what they mean and what would fix them
_ACTIONABLE = {
    errno.ENOSPC: ("no space left on device", "free some space, or write somewhere else"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or write somewhere else"),
    errno.EROFS: ("read-only file system", "write somewhere else"),
    errno.EACCES: ("permission denied", "check the permissions, or write somewhere else"),
    errno.EPERM: ("operation not permitted", "check the permissions, or write somewhere else"),
}


def user_os_error(exc: OSError, path: str | os.PathLike | None = None) -> GalbenchError | None:
    """The one-line error for a full disk, a read-only file system or a permission problem (None for others).

    `path` names the file when the OS did not (a failed write on an open file carries no name)."""
    # libraries re-raise the OS's error as their own, keeping it as the context (astropy's free-space check)
    cause: BaseException | None = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in _ACTIONABLE):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    what, fix = _ACTIONABLE[cause.errno]
    where = path if path is not None else exc.filename
    return GalbenchError(what, where=str(where) if where is not None else None, fix=fix)


def make_dirs(path: str | os.PathLike) -> list[Path]:
    """mkdir -p; returns the folders it created, deepest first, so a failure can take them back."""
    path = Path(path)
    created = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        created.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the given folders (deepest first) where they are empty; a non-empty one stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _no_space_left(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 2**16


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    On failure nothing is left: not the temporary file, not the folders made for it. A full disk, a
    read-only file system or a permission problem becomes a GalbenchError naming `path`."""
    target = Path(path)
    created: list[Path] = []
    tmp_path = None
    try:
        created = make_dirs(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp makes the file private (0600); give it the permissions an ordinary new file would get
        tmp_path.chmod(0o666 & ~_UMASK)
        yield tmp_path
        os.replace(tmp_path, target)
        created = []
    except (OSError, RuntimeError) as exc:
        # the temporary file's name means nothing to the user: name the target (or what else failed)
        filename = getattr(exc, "filename", None)
        named = filename is not None and Path(filename).parent != target.parent
        error = user_os_error(exc, filename if named else target) if isinstance(exc, OSError) else None
        if error is None and getattr(exc, "errno", None) is None and _no_space_left(target.parent):
            # some writers report a full disk without an errno: numpy's short writes (under astropy) raise a
            # bare OSError, torch.save a RuntimeError from its zip writer
            error = user_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), target)
        if error is None:
            raise
        raise error from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        remove_empty(created)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock file for the block; while another process holds it, fail with one line.

    An `fcntl` lock dies with its process, so a killed holder never blocks the next command; the file holds
    the holder's PID only for the message, and is removed when the block ends."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise GalbenchError(f"{what} is in use by galbench process {holder or '(starting)'}", where=str(path),
                                fix="wait for it to finish, or stop it") from None
        # the previous holder removes the file as it lets go: a lock on a removed file locks nothing
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def cache_entry(path: str | os.PathLike, what: str) -> Iterator[bool]:
    """Yield whether a cache entry is still to be made; while it is, hold its lock (PATH.lock), so a second
    command fails with the holder's PID rather than making the same thing into the same files."""
    path = Path(path)
    if path.exists():
        yield False
        return
    with exclusive_lock(path.with_name(path.name + ".lock"), what):
        yield not path.exists()  # another process may have finished it while this one looked


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, pretty-printed and with sorted keys so diffs stay readable."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def content_hash(obj: Any, length: int = 12) -> str:
    """A short SHA-256 of a JSON-able object: the cache key of whatever these parameters make."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative_path(value: str | os.PathLike, base: Path) -> Path:
    """A path from a suite file: absolute (or ~), else relative to the suite file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(base) / path


def cache_dir(kind: str) -> Path:
    """galbench's cache folder for one kind of artefact ($GALBENCH_CACHE or ~/.cache/galbench)."""
    root = Path(os.environ.get("GALBENCH_CACHE", Path.home() / ".cache" / "galbench"))
    path = root / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
