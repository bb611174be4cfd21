"""What a fractal set costs to generate, per image and in memory, measured on scaled sets and extrapolated.

Each measurement runs in a fresh process (one worker, so its peak resident memory is the whole cost) that
finds the categories, then streams the set to a catalog file; it reports the search and rendering seconds
and the process's peak resident memory. Comparing a small and a four-times-larger set shows whether memory
stays flat, and the per-category search and per-image rendering costs give the full preset's time.

    python tools/fractal_scale.py --recipe fractaldb --classes 4 16 --per-class 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from galbench.data import fractal
params = fractal.FractalParams(**json.loads(sys.argv[1]))
start = time.perf_counter()
systems = (fractal.fractaldb_systems(params) if params.recipe == "fractaldb" else fractal.class_systems(params))
search = time.perf_counter() - start
start = time.perf_counter()
fractal.generate_to_file(params, sys.argv[2], workers=1)
total = time.perf_counter() - start
print(json.dumps({"search_seconds": search, "generate_seconds": total,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(params: dict) -> dict:
    """One scaled generation in a fresh single-worker process."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "set.fits"
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(params), str(path)], capture_output=True,
                              text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["file_mib"] = path.stat().st_size / 2**20
    images = params["classes"] * params["per_class"]
    # generate_seconds searches again (the same categories) and renders: rendering alone is the difference
    result["render_seconds_per_image"] = (result["generate_seconds"] - result["search_seconds"]) / images
    result["search_seconds_per_class"] = result["search_seconds"] / params["classes"]
    return {**params, "images": images, **result}


def main(argv: list[str] | None = None) -> None:
    """Measure scaled sets and print the extrapolation to a full preset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="fractaldb", choices=["galbench", "fractaldb"])
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--full-classes", type=int, default=1000)
    parser.add_argument("--full-per-class", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    rows = [measure({"classes": classes, "per_class": args.per_class, "size": args.size, "seed": 0,
                     "recipe": args.recipe}) for classes in args.classes]
    for row in rows:
        print(f"{row['classes']:>5} classes x {row['per_class']} = {row['images']:>6} images: search "
              f"{row['search_seconds']:.1f} s ({row['search_seconds_per_class']:.2f} s/class), rendering "
              f"{row['render_seconds_per_image'] * 1000:.1f} ms/image, peak RSS {row['peak_rss_mib']:.0f} MiB, "
              f"file {row['file_mib']:.0f} MiB")
    largest = rows[-1]
    full_images = args.full_classes * args.full_per_class
    core_hours = (args.full_classes * largest["search_seconds_per_class"]
                  + full_images * largest["render_seconds_per_image"]) / 3600
    size_gib = full_images * 3 * args.size**2 / 2**30
    print(f"extrapolated {args.full_classes} x {args.full_per_class} at {args.size} px: {core_hours:.1f} core-hours "
          f"({core_hours / 16:.2f} h on 16 cores), a {size_gib:.1f} GiB file, peak memory per worker as above")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "full_core_hours": core_hours, "full_file_gib": size_gib},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
