"""Run the benchmarks, save them, and compare with the last saved run on this machine (if there is one).

pytest-benchmark refuses --benchmark-compare-fail when nothing was saved before, so the first run on a
machine only saves; every later run fails if any median is more than 15% slower than the previous run's.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
root = here.parents[1]
saved = list((root / ".benchmarks").glob(f"*{platform.system()}*/*.json"))
compare = ["--benchmark-compare", "--benchmark-compare-fail=median:15%"] if saved else []
if not saved:
    print("no saved benchmark run on this machine yet: this run is saved as the baseline", flush=True)
command = [sys.executable, "-m", "pytest", str(here), "--benchmark-only", "--benchmark-autosave", *compare,
           *sys.argv[1:]]
sys.exit(subprocess.call(command, cwd=root))
