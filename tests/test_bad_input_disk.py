"""A full disk or a read-only file system: one line naming the path, exit 2, nothing half-written.

The real thing on a small tmpfs mounted in a private mount namespace (`unshare -rm`, skipped with the reason
where the machine does not allow it), and, everywhere, a write patched to fail with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from galbench.data.catalog import write_catalog
from tests.conftest import make_catalog, write_suite

FULL = "no space left on device"


@pytest.fixture(scope="session")
def tmpfs_allowed(tmp_path_factory) -> None:
    """Skip unless a tmpfs can be mounted in a private mount namespace here."""
    folder = tmp_path_factory.mktemp("probe")
    try:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run unshare to mount a tmpfs: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}")


def _galbench(*args) -> str:
    return shlex.join([sys.executable, "-m", "galbench.cli", "-q", *map(str, args)])


def _on_tmpfs(folder, options: str, command: str, snapshot):
    """Run `command` with a tmpfs mounted on `folder` (visible to it alone); copy what it left to `snapshot`."""
    folder.mkdir(exist_ok=True)
    snapshot.mkdir()
    script = (f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))} || exit 99; {command}; code=$?; "
              f"cp -a {shlex.quote(str(folder))}/. {shlex.quote(str(snapshot))}/; exit $code")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode != 99, done.stderr
    return done


def _one_line(done, *fragments) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _left(snapshot) -> list[str]:
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*"))


def _no_temporaries(snapshot) -> None:
    assert not [p for p in snapshot.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_synth_on_a_full_disk(tmpfs_allowed, tmp_path):
    disk, left = tmp_path / "disk", tmp_path / "left"
    done = _on_tmpfs(disk, "size=128k", _galbench("data", "synth", disk / "sim.fits", "--n", 20, "--workers", 1),
                     left)
    _one_line(done, f"{disk / 'sim.fits'}: {FULL}")
    assert _left(left) == []


def test_synth_on_a_read_only_file_system(tmpfs_allowed, tmp_path):
    disk, left = tmp_path / "disk", tmp_path / "left"
    done = _on_tmpfs(disk, "ro,size=64k", _galbench("data", "synth", disk / "sim" / "sim.fits", "--n", 10), left)
    _one_line(done, str(disk / "sim"), "read-only file system")
    assert _left(left) == []


def test_import_on_a_full_disk(tmpfs_allowed, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("round", "disc"):
        (tmp_path / "source" / name).mkdir(parents=True)
        for k in range(10):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "source" / name / f"{name}{k}.png")
    disk, left = tmp_path / "disk", tmp_path / "left"
    done = _on_tmpfs(disk, "size=64k", _galbench("data", "import", tmp_path / "source", disk / "imported.fits"), left)
    _one_line(done, f"{disk / 'imported.fits'}: {FULL}")
    assert _left(left) == []


def test_run_on_a_full_disk_keeps_complete_files_only(tmpfs_allowed, tmp_path):
    suite = write_suite(tmp_path, seeds=1, epochs=2)
    disk, left = tmp_path / "disk", tmp_path / "left"
    # room for the small files and best.pt, not for last.pt (with the optimizer's state)
    done = _on_tmpfs(disk, "size=1m", _galbench("run", suite, "--out", disk / "run"), left)
    _one_line(done, FULL, str(disk / "run"))
    _no_temporaries(left)
    assert (left / "run" / "environment.json").exists()
    events = (left / "run" / "runs" / "scratch__seed0" / "events.jsonl").read_text()
    assert events.endswith("\n") and all(json.loads(line) for line in events.splitlines())
    assert not (left / "run" / "runs" / "scratch__seed0" / "last.pt").exists()


def test_run_on_a_read_only_file_system_creates_nothing(tmpfs_allowed, tmp_path):
    suite = write_suite(tmp_path, seeds=1, epochs=1)
    disk, left = tmp_path / "disk", tmp_path / "left"
    done = _on_tmpfs(disk, "ro,size=64k", _galbench("run", suite, "--out", disk / "run"), left)
    _one_line(done, str(disk / "run"), "read-only file system")
    assert _left(left) == []


def test_classify_on_a_full_disk_leaves_only_what_resume_reuses(tmpfs_allowed, finished_suite, tmp_path):
    disk, left = tmp_path / "disk", tmp_path / "left"
    model = finished_suite / "export" / "winner.onnx"
    catalog = tmp_path / "big.fits"
    from galbench.bench import tiled

    source = make_catalog(n=40, size=64, classes=("elliptical", "spiral", "edge-on"))
    write_catalog(catalog, tiled(source, 400))
    done = _on_tmpfs(disk, "size=12k", _galbench("classify", catalog, "--model", model, "--out",
                                                 disk / "out.fits", "--backend", "onnxruntime"), left)
    _one_line(done, FULL, str(disk / "out.fits"))
    _no_temporaries(left)
    assert not (left / "out.fits").exists()
    assert all(not p.is_file() or p.parent.name == "out.fits.partial" for p in left.rglob("*"))


# --- everywhere: a write patched to fail as a full disk does -------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_patched_full_disk_during_synth(cli, tmp_path, monkeypatch):
    from astropy.io import fits

    monkeypatch.setattr(fits.HDUList, "writeto", _enospc)
    code, _, err = cli("-q", "data", "synth", tmp_path / "out" / "sim.fits", "--n", 10, "--workers", 1)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'out' / 'sim.fits'}: {FULL} (free some space, or " \
                                        "write somewhere else)"
    assert list(tmp_path.iterdir()) == []


def test_patched_full_disk_during_a_checkpoint_write(cli, tmp_path, monkeypatch):
    import galbench.experiment.train as train

    monkeypatch.setattr(train.torch, "save", _enospc)
    suite = write_suite(tmp_path, seeds=1, epochs=1)
    run = tmp_path / "run"
    code, _, err = cli("-q", "run", suite, "--out", run)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"{run / 'runs' / 'scratch__seed0'}/" in lines[0] and FULL in lines[0]
    _no_temporaries(run)
    assert not list((run / "runs" / "scratch__seed0").glob("*.pt"))


def test_patched_full_disk_in_the_event_log_leaves_no_half_line(tmp_path, monkeypatch):
    from galbench.errors import GalbenchError
    from galbench.experiment.train import EventLog

    log = EventLog(tmp_path / "events.jsonl")
    log.append({"event": "run_start"})
    before = log.path.read_bytes()
    real_open = open

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[:7])
            self.handle.flush()
            _enospc()

    monkeypatch.setattr("builtins.open", lambda *a, **k: HalfWriter(real_open(*a, **k)))
    with pytest.raises(GalbenchError, match=FULL):
        log.append({"event": "eval", "val_accuracy": 0.5})
    monkeypatch.undo()
    assert log.path.read_bytes() == before
