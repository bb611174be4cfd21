"""Every example command in `--help` and in the README's code blocks runs: the same commands, made fast.

Each command keeps its own arguments; the test only appends arguments that make it small (fewer galaxies,
seeds and epochs, `--limit` for downloads: later values win), fills in placeholders (`<run-id>`), points
network commands at a local server that answers like VizieR and the SkyServer, and points the GZ1 sample
at a small copy of it. A new example whose command has no fast version here fails, so it gets one.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from galbench.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
SKIPPED = {"--executor": "needs a running Ray cluster at --address; Ray runs are tested in test_ray_executor.py"}


def help_examples() -> list[str]:
    """The `galbench ...` lines of every parser's epilog (a description may follow after 3+ spaces)."""
    parser = build_parser()
    parsers, commands = [parser], []
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(dict.fromkeys(action.choices.values()))
        for line in re.sub(r"\\\n\s*", " ", current.epilog or "").splitlines():
            line = line.strip()
            if line.startswith("galbench "):
                commands.append(re.split(r"\s{3,}", line)[0])
    return commands


def readme_examples() -> list[str]:
    """The `galbench ...` commands of the README's shell code blocks (joined continuations, no comments)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for language, block in re.findall(r"^[ \t]*```(\w*)[ \t]*\n(.*?)^[ \t]*```", text, re.S | re.M):
        if language not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in re.sub(r"\s+#.*$", "", line).split("&&"):
                if part.strip().startswith("galbench "):
                    commands.append(part.strip())
    return commands


EXAMPLES = list(dict.fromkeys(help_examples() + readme_examples()))
FAST_RUN = ["--seeds", "1", "--set", "train.epochs=1", "--set", "data.synth.n=60", "--set", "pretrained.sim.synth.n=60",
            "--set", "pretrained.sim.epochs=1", "--set", "variant.fractal.fractal={classes=2,per_class=20,epochs=1}"]
FAST = {  # (command, sub-command) -> arguments appended
    ("data", "synth"): ["--n", "100", "--workers", "1"],
    ("data", "info"): [], ("data", "montage"): [],
    ("data", "import"): ["--workers", "1"],
    ("data", "sdss"): ["--limit", "6", "--width", "48", "--height", "48", "--workers", "2", "--timeout", "0.3",
                       "--retries", "1"],
    ("pretrain", "fractal"): ["--classes", "2", "--per-class", "20", "--epochs", "1"],
    ("pretrain", "catalog"): ["--epochs", "1"],
    ("pretrain", "ssl"): ["--epochs", "1", "--probes", "1", "--batch-size", "32"],
    ("run", None): FAST_RUN, ("report", None): [], ("export", None): ["--parity-images", "16"],
    ("classify", None): [], ("models", None): [], ("compare", None): [],
}
ORDER = ["synth", "sdss", "import", "info", "montage", "pretrain", "run", "report", "compare", "models", "export",
         "classify"]


def _kind(argv: list[str]) -> tuple[str, str | None]:
    return (argv[0], argv[1]) if argv[0] in ("data", "pretrain") else (argv[0], None)


def _order(command: str) -> int:
    argv = shlex.split(command)[1:]
    kind = _kind(argv)
    return ORDER.index(kind[1] if kind[0] == "data" else kind[0])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, request):
    """A folder where the session's examples run: a fake VizieR/SkyServer, a small GZ1 copy where the
    sample exists, and a finished quickstart run (the typical session's first steps)."""
    from tests.test_sdss_fetch import FakeServices

    folder = tmp_path_factory.mktemp("examples")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServices)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    table = FakeServices.table
    rows = [0, 9, 10, 20, 29]  # rows the fake server answers well
    Table({"objid": np.arange(5), "ra": table["_RA"][rows], "dec": table["_DE"][rows],
           "petroR90_r": [10.0, 12.0, 8.0, 15.0, 9.0]}).write(folder / "my_galaxies.csv", format="ascii.csv")
    state = {"folder": folder, "run_dir": None}
    with pytest.MonkeyPatch.context() as patch:
        # a cache of its own: the session's shared one is counted by other tests (one fractal pretraining)
        patch.setenv("GALBENCH_CACHE", str(folder / "cache"))
        patch.setenv("GALBENCH_VIZIER_URL", base)
        patch.setenv("GALBENCH_SKYSERVER_URL", base + "/{release}")
        patch.chdir(folder)
        for command in sorted(EXAMPLES, key=_order):  # what later examples need: sim.fits and a run
            argv = shlex.split(command)[1:]
            if _kind(argv) in (("data", "synth"), ("run", None)) and "sim.fits" in argv or argv == ["run", "quickstart"]:
                _run(argv, state, request)
        yield state
    server.shutdown()
    server.server_close()


def _prepare(argv: list[str], state: dict, request) -> list[str] | None:
    """The fast version of an example (None when it cannot run here), with what it needs made first."""
    folder = state["folder"]
    if any(flag in argv for flag in SKIPPED):
        return None
    argv = [re.sub(r"reports/\w+/<(run-id|hash)>", str(state["run_dir"]), part) for part in argv]
    argv = [str(REPO / part) if part.startswith("suites/") else part for part in argv]
    if "../shared/data/gz1-sdss" in argv:
        gz1 = request.getfixturevalue("gz1_small")
        argv[argv.index("../shared/data/gz1-sdss")] = str(gz1)
    for name in ("survey.fits", "labelled.fits"):  # any labelled catalog of the quickstart's classes
        if name in argv and not (folder / name).exists():
            shutil.copy(folder / "sim.fits", folder / name)
    if argv[0] == "export" and "best.pt" in argv and not (folder / "best.pt").exists():
        shutil.copy(state["run_dir"] / "runs" / "scratch__seed0" / "best.pt", folder / "best.pt")
    if argv[0] == "classify" and argv[1].endswith(".csv") and not (folder / argv[1]).exists():
        _image_path_catalog(folder / "sim.fits", folder / argv[1])
    if argv[0] == "classify" and "--model" in argv:
        model = folder / argv[argv.index("--model") + 1]
        shutil.copy(state["run_dir"] / "export" / "winner.onnx", model)
        source = folder / argv[1]
        if not source.exists():
            shutil.copy(folder / "sim.fits", source)
    kind = _kind(argv)
    assert kind in FAST, f"no fast version of the example {shlex.join(argv)}: add one to FAST"
    return argv + FAST[kind]


def _image_path_catalog(source: Path, out: Path, rows: int = 12) -> None:
    """A CSV catalog of PNG cutouts (an image_path column), made from the first rows of a catalog file."""
    from PIL import Image

    from galbench.data.catalog import read_catalog

    catalog = read_catalog(source)
    (out.parent / "cutouts").mkdir(exist_ok=True)
    paths = []
    for row in range(rows):
        path = f"cutouts/{catalog.table['objid'][row]}.png"
        Image.fromarray(np.asarray(catalog.images[row]).transpose(1, 2, 0)).save(out.parent / path)
        paths.append(path)
    Table({"objid": catalog.table["objid"][:rows], "image_path": paths}).write(out, format="ascii.csv")


def _run(argv: list[str], state: dict, request) -> None:
    argv = _prepare(argv, state, request)
    if argv is None:
        return
    code = main(argv)
    assert code == 0, f"galbench {shlex.join(argv)} exited {code}"
    if argv[0] == "run" and state["run_dir"] is None:
        (found,) = (state["folder"] / "reports" / "quickstart").iterdir()
        state["run_dir"] = found


@pytest.mark.parametrize("command", sorted(EXAMPLES, key=_order))
def test_example_runs(command, workspace, request, monkeypatch, capsys):
    argv = shlex.split(command)[1:]
    if any(flag in argv for flag in SKIPPED):
        pytest.skip(next(reason for flag, reason in SKIPPED.items() if flag in argv))
    monkeypatch.chdir(workspace["folder"])
    monkeypatch.setenv("GALBENCH_CACHE", str(workspace["folder"] / "cache"))
    _run(argv, workspace, request)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err


def test_the_typical_session_in_the_main_help_is_there():
    """The session the main help shows ends by classifying its own synth file with the quickstart's winner,
    which only works when the file has the quickstart's classes (it once had 3 against the winner's 5)."""
    from galbench.experiment.suite import load_suite

    synth = next(c for c in help_examples() if c.startswith("galbench data synth sim.fits"))
    classes = shlex.split(synth)[shlex.split(synth).index("--classes") + 1]
    suite, _ = load_suite("quickstart")
    assert classes == suite.data.synth.classes
    assert any(c.startswith("galbench classify sim.fits --run") for c in help_examples())
