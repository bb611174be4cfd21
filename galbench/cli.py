"""The `galbench` command: parses arguments, calls one library function, maps errors to exit codes."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from rich.markup import escape

from galbench import __version__
from galbench.console import always, err, out, progress_bar, set_quiet
from galbench.errors import GalbenchError
from galbench.fileio import user_os_error

EXIT_BAD_INPUT = 2

EPILOG = """\
typical session:
  galbench data synth sim.fits --n 500 --seed 7 --classes elliptical,lenticular,spiral,edge-on,irregular
                                                        simulate SDSS-like galaxies (offline), the quickstart's classes
  galbench data info sim.fits                           what is in a catalog file
  galbench data montage sim.fits sim.png                look at examples of every class
  galbench run quickstart                               train scratch vs pretrained arms over seeds
  galbench report reports/quickstart/<run-id>           tables, plots and significance tests
  galbench classify sim.fits --run reports/quickstart/<run-id>   classify a catalog with the winner

Every command takes --help. Progress and messages go to stderr (plain lines when it is not a terminal),
results to stdout. Bad input gets one line on stderr and exit code 2. Caches (simulated catalogs,
pretrainings, cutouts) live in $GALBENCH_CACHE, by default ~/.cache/galbench."""


def _at_least(low: int):
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (what, and where the help is) and exit code 2, like any other
    bad input."""

    def error(self, message: str):
        always(f"[bold red]error:[/] {escape(self.prog)}: {escape(message)} (see {escape(self.prog)} --help)")
        raise SystemExit(EXIT_BAD_INPUT)


class _Usage(Exception):
    """A command group given without its sub-command: its help goes to stderr and the exit code is 2."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def _usage(parser: argparse.ArgumentParser):
    def handler(args) -> None:
        raise _Usage(parser)

    return handler


def _cmd_data_synth(args) -> None:
    from galbench.data.catalog import write_catalog
    from galbench.data.synth import SynthParams, synthesize

    params = SynthParams(n=args.n, size=args.size, seed=args.seed, classes=args.classes,
                         star_probability=args.star_probability)
    params.check()
    with progress_bar("simulating galaxies", params.n, unit="galaxies") as advance:
        catalog = synthesize(params, workers=args.workers, progress=advance)
    write_catalog(args.out, catalog)
    err.print(f"wrote {len(catalog)} galaxies to {args.out}")


def _cmd_data_info(args) -> None:
    from galbench.data.catalog import catalog_summary, read_catalog

    catalog = read_catalog(args.file, require_images=False)
    if args.json:
        sys.stdout.write(json.dumps(catalog_summary(catalog), indent=2) + "\n")
        return
    from galbench.analysis.report import catalog_info_table

    out.print(catalog_info_table(catalog))


def _cmd_data_montage(args) -> None:
    from galbench.analysis.plots import montage, save_png
    from galbench.data.catalog import read_catalog

    catalog = read_catalog(args.file)
    save_png(montage(catalog, per_class=args.per_class, seed=args.seed), args.out)
    err.print(f"wrote {args.out}")


def _cmd_data_import(args) -> None:
    from galbench.data import importers
    from galbench.data.catalog import write_catalog

    source = Path(args.source)
    crop = _parse_crop(args.crop)
    labels_csv = Path(args.labels) if args.labels else source / "labels.csv"
    if source.suffix.lower() in (".h5", ".hdf5"):
        if args.stretch is not None:
            raise GalbenchError("--stretch is for FITS science images; Galaxy10 images are 8-bit already",
                                where=str(source), fix="drop --stretch")
        catalog, report = importers.import_galaxy10(source, crop=crop, size=args.size)
    elif not source.is_dir():
        raise GalbenchError("not a folder or an HDF5 file", where=str(source))
    elif args.map or args.labels or labels_csv.exists():
        class_map = importers.parse_class_map(args.map) if args.map else None
        total = len(importers.read_labels_csv(labels_csv, ()))
        with progress_bar("decoding images", total, unit="images") as advance:
            catalog, report = importers.import_folder_csv(
                source, labels_csv, args.class_column, class_map, id_column=args.id_column, crop=crop,
                size=args.size, strict=args.strict, progress=advance, workers=args.workers, dedupe=args.dedupe,
                stretch=args.stretch)
    else:
        catalog, report = importers.import_class_folders(source, crop=crop, size=args.size, strict=args.strict,
                                                         workers=args.workers, dedupe=args.dedupe,
                                                         stretch=args.stretch)
    write_catalog(args.out, catalog)
    err.print(f"wrote {report.kept} galaxies to {args.out}; dropped {report.unmapped} rows with unmapped "
              f"labels, {report.duplicates} repeated objids and {len(report.bad_images)} bad images")
    for name, reason in report.bad_images[:20]:
        err.print(f"  [yellow]skipped[/] {escape(name)}: {escape(reason)}")


def _cmd_run(args) -> None:
    from galbench.analysis.report import run_summary_table
    from galbench.console import RunDisplay
    from galbench.experiment.runner import run_suite
    from galbench.experiment.suite import load_suite

    overrides = list(args.set or [])
    if args.seeds is not None:
        overrides.append(f"suite.seeds={args.seeds}")
    if args.executor is not None:
        overrides.append(f"executor.kind='{args.executor}'")
    if args.address is not None:
        overrides.append(f"executor.address='{args.address}'")
    suite, base = load_suite(args.suite, overrides)
    with RunDisplay() as display:
        out_dir, results = run_suite(suite, base, out=args.out, device_override=args.device, display=display)
    if args.no_report:
        out.print(run_summary_table(results, suite.suite.thresholds, title=f"{suite.suite.name}: {out_dir}"))
    else:
        _print_report(out_dir)
    err.print(f"results in {out_dir}")


def _print_report(run_dir: Path, as_json: bool = False) -> None:
    from rich.markup import escape

    from galbench.analysis.report import run_status, terminal_report, write_report

    report, paths = write_report(run_dir)
    status, incomplete = run_status(report)
    if incomplete:
        err.print(f"[yellow]warning:[/] {escape(status)}", highlight=False)
    if as_json:
        sys.stdout.write(paths[-1].read_text() + "\n")
    else:
        for part in terminal_report(report):
            out.print(part, soft_wrap=False)
    err.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)


def _cmd_report(args) -> None:
    _print_report(args.run_dir, as_json=args.json)


def _cmd_compare(args) -> None:
    from rich.markup import escape

    from galbench.analysis.report import compare_tables, load_report

    warnings_, tables = compare_tables(load_report(args.run_dir_a), load_report(args.run_dir_b))
    for warning in warnings_:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for table in tables:
        out.print(table)


def _cmd_models(args) -> None:
    import json

    from rich.table import Table

    from galbench.models.registry import model_rows

    rows = model_rows(args.pattern)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="registered models")
    for column in ("name", "backbone parameters", "embedding", "GFLOPs 64 px", "GFLOPs 224 px", "description"):
        table.add_column(column, justify="left" if column in ("name", "description") else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['backbone_parameters']:,}", str(row["embedding_size"]),
                      f"{row['forward_flops_64px'] / 1e9:.3f}", f"{row['forward_flops_224px'] / 1e9:.2f}",
                      row["description"])
    out.print(table)
    err.print(escape("Any timm model works as timm:NAME (pip install 'galbench[timm]'). Parameters exclude the "
                     "classifier head ((embedding + 1) x classes more); FLOPs: one image's forward pass "
                     "(torch FlopCounterMode, 3 classes)."))


def _cmd_pretrain_fractal(args) -> None:
    from galbench.console import RunDisplay
    from galbench.data.fractal import FractalParams
    from galbench.experiment.pretrain import pretrain_fractal
    from galbench.experiment.suite import FRACTAL_PRESETS
    from galbench.experiment.train import resolve_device

    preset = FRACTAL_PRESETS[args.preset]
    given = {key: getattr(args, key) for key in ("classes", "per_class", "recipe", "epochs", "batch_size")}
    chosen = {key: preset[key] if value is None else value for key, value in given.items()}
    params = FractalParams(classes=chosen["classes"], per_class=chosen["per_class"], size=args.size, seed=args.seed,
                           recipe=chosen["recipe"])
    with RunDisplay() as display:
        pretrain_fractal(args.out, params, args.model, chosen["epochs"], args.lr, chosen["batch_size"],
                         resolve_device(args.device), display)
    _print_checkpoint_cost(args.out)


def _cmd_pretrain_catalog(args) -> None:
    from galbench.console import RunDisplay
    from galbench.data.catalog import read_catalog
    from galbench.experiment.pretrain import pretrain_on_catalog
    from galbench.experiment.train import resolve_device

    catalog = read_catalog(args.data)
    size = args.size or catalog.images.shape[-1]
    source = {"kind": "catalog", "catalog": str(args.data), "model": args.model, "epochs": args.epochs,
              "lr": args.lr, "image_size": size}
    with RunDisplay() as display:
        pretrain_on_catalog(catalog, args.out, args.model, size, args.epochs, args.lr, args.batch_size,
                            resolve_device(args.device), source, seed=args.seed, display=display)
    _print_checkpoint_cost(args.out)


def _cmd_pretrain_ssl(args) -> None:
    from galbench.console import RunDisplay
    from galbench.data.catalog import read_catalog
    from galbench.experiment.ssl import SSLSpec, pretrain_ssl_files
    from galbench.experiment.train import resolve_device

    size = args.size or read_catalog(args.data).images.shape[-1]
    spec = SSLSpec(method=args.method, model=args.model, image_size=size, crop=1.0, epochs=args.epochs, lr=args.lr,
                   batch_size=args.batch_size, temperature=args.temperature, momentum=args.momentum,
                   probes=args.probes, seed=args.seed)
    with RunDisplay() as display:
        pretrain_ssl_files(args.out, args.data, args.probe_data, spec, resolve_device(args.device), display)
    _print_checkpoint_cost(args.out)


def _print_checkpoint_cost(path: Path) -> None:
    """The "wrote" line of a pretraining: what it learned (accuracy or probes) and what it cost."""
    from galbench.models.weights import load_checkpoint

    meta = load_checkpoint(path)["meta"]
    cost, curve = meta["pretrain_cost"], meta.get("probe_curve")
    if curve:  # self-supervised: no accuracy of its own, the probes say whether it learned
        learned = (f"{meta['pretrain_source']['method']} on {meta['pretrain_source']['rows']:,} images; probes k-NN "
                   f"{curve[0]['knn_accuracy']:.3f} -> {curve[-1]['knn_accuracy']:.3f}, linear "
                   f"{curve[0]['linear_probe_accuracy']:.3f} -> {curve[-1]['linear_probe_accuracy']:.3f} (majority "
                   f"class {meta['probe_majority_accuracy']:.3f}), plot {path.with_name(path.stem + '.probe.png')}")
    elif "pretrain_val_accuracy" in meta:
        learned = f"pretraining val accuracy {meta['pretrain_val_accuracy']:.3f}"
    else:
        learned = f"{meta['pretrain_source'].get('method', 'self-supervised')} on {meta['pretrain_source']['rows']:,} images"
    err.print(f"wrote {path}: {learned}; cost {cost['samples']:,} samples, {cost['train_flops'] / 1e12:.2f} TFLOPs, "
              f"{cost['device_seconds']:.1f} device-s (+{cost['eval_device_seconds']:.1f} evaluating), "
              f"{cost['wall_seconds']:.1f} s wall (+{cost['generation_seconds']:.1f} s generating data)",
              highlight=False)


def _cmd_export(args) -> None:
    from galbench.inference import exportdata
    from galbench.inference.export import export_onnx
    from galbench.models.weights import load_checkpoint

    if args.data is not None and args.run is not None:
        raise GalbenchError("give at most one of --data and --run")
    checkpoint = load_checkpoint(args.checkpoint)
    if args.run is not None:
        data = exportdata.from_run(args.run, checkpoint, args.parity_images, training_images=args.int8)
    elif args.data is not None:
        data = exportdata.from_catalog(args.data, checkpoint["classes"], args.parity_images, training_images=args.int8)
    else:  # no data given: check parity on freshly simulated galaxies
        from galbench.data.synth import SynthParams, synthesize

        data = exportdata.ExportData(synthesize(SynthParams(n=args.parity_images, size=128, seed=12345),
                                                workers=1).images)
    meta = export_onnx(args.checkpoint, args.out, data.sample, fp16=args.fp16, val_images=data.val_images,
                       val_labels=data.val_labels, calibrate=not args.no_calibrate, tta=args.tta, int8=args.int8,
                       int8_images=data.train_images, stretch=args.stretch, catalog=data.catalog)
    err.print(f"wrote {args.out} ({meta['precision']}, {args.tta} view(s), + {Path(args.out).with_suffix('.pt').name});"
              f" parity on {meta['parity_images']} images: max |logit difference| "
              f"{meta['parity_max_abs_logit_difference']}, argmax agreement {meta['parity_argmax_agreement']}")
    if "calibration" in meta:
        calibration = json.loads(meta["calibration"])
        err.print(f"calibrated on {sum(calibration['reliability_before']['count'])} validation images: temperature "
                  f"{calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} -> "
                  f"{calibration['ece_after']:.4f}")
    elif not args.no_calibrate:
        err.print("[yellow]warning:[/] probabilities are raw softmax: no labelled images with the model's classes "
                  "(pass --run RUN_DIR, or --data with a labelled catalog)")
    if "quantization" in meta:
        gate = json.loads(meta["quantization"])
        err.print(f"int8 on {gate['val_images']} validation images: accuracy {gate['val_accuracy_int8']:.4f} "
                  f"(fp32 {gate['val_accuracy_fp32']:.4f}), argmax agreement {gate['argmax_agreement']:.4f}")


def _cmd_classify(args) -> None:
    from galbench.inference.classify import classify
    from galbench.inference.inputs import count_rows

    output = args.out or args.input.with_name(args.input.stem + ".classified.fits")
    if output.resolve() == args.input.resolve():
        raise GalbenchError("--out must differ from the input: galbench never edits its input", where=str(output))
    rows = count_rows(args.input)
    fetch = {"scale": args.scale, "release": args.release, "base_url": args.skyserver_url} if args.fetch else None
    with progress_bar("classifying", rows, unit="galaxies") as advance:
        table = classify(args.input, model=args.model, run=args.run, out=output, backend=args.backend,
                         batch_size=args.batch_size, resume=args.resume, skip_bad=args.skip_bad,
                         copy_images=args.copy_images, progress=advance, executor=args.executor,
                         address=args.address, fetch=fetch, embeddings=args.embeddings)
    counts = ", ".join(f"{name} {int((table['pred_class'] == name).sum()):,}"
                       for name in dict.fromkeys(table["pred_class"]))
    err.print(f"wrote {output}: {len(table):,} galaxies with {table.meta['BACKEND']} "
              f"({table.meta['PROVIDRS']}) at {table.meta['GAL_PER_S']:,.0f} galaxies/s; predicted {counts}",
              highlight=False)


def _cmd_data_sdss(args) -> None:
    from galbench.data import sdss
    from galbench.data.catalog import write_catalog
    from galbench.fileio import write_text_atomic

    if args.catalog == "nair-abraham-2010":
        raw = sdss.fetch_vizier(sdss.NAIR_ABRAHAM, base_url=args.vizier_url, timeout=args.timeout, retries=args.retries)
        where = f"VizieR {sdss.NAIR_ABRAHAM}"
    else:
        raw, where = sdss.read_table(args.catalog), args.catalog
    table = sdss.normalise_catalog(raw, where)
    if args.limit:
        table = table[: args.limit]
    spec = sdss.CutoutSpec(width=args.width, height=args.height, release=args.release, base_url=args.skyserver_url)
    with progress_bar("fetching cutouts", len(table), unit="images") as advance:
        catalog, report, failed = sdss.build_catalog(
            table, args.scheme, spec, scale=args.scale, scale_column=args.scale_column,
            scale_factor=args.scale_factor, workers=args.workers, timeout=args.timeout, retries=args.retries,
            progress=advance, source=f"SDSS {args.release} cutouts of {where}")
    if len(catalog) == 0:
        raise GalbenchError(f"no cutout could be fetched ({len(report.failed)} failed; first: "
                            f"{report.failed[0][1] if report.failed else 'none'})", fix="check the network and URLs")
    write_catalog(args.out, catalog)
    failed_path = args.out.with_suffix(".failed.csv")
    if len(failed):
        buffer = io.StringIO()
        failed.write(buffer, format="ascii.csv")
        write_text_atomic(failed_path, buffer.getvalue())
    err.print(f"wrote {len(catalog):,} galaxies to {args.out}: fetched {report.fetched}, cached {report.cached}, "
              f"failed {len(report.failed)}" + (f" (listed in {failed_path})" if len(failed) else ""))


def _parse_crop(text: str | None):
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise GalbenchError(f"--crop {text!r} is not a number", fix="a fraction of the side (0.5) or pixels (212)") from None
    if value <= 0:
        raise GalbenchError("--crop must be positive")
    return value if value <= 1 else int(value)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every sub-command with its help)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="galbench", formatter_class=formatter, epilog=EPILOG,
        description="Benchmark galaxy-morphology classifiers: does pretraining pay off, in accuracy and compute?")
    parser.add_argument("-V", "--version", action="version", version=f"galbench {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress or messages on stderr, only errors (results still go to stdout)")
    parser.set_defaults(handler=_usage(parser))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = commands.add_parser("data", help="make, import and inspect galaxy-catalog FITS files",
                               description="Galaxy-catalog FITS files: simulate, import, inspect.")
    data.set_defaults(handler=_usage(data))
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    synth = data_commands.add_parser(
        "synth", help="simulate SDSS-like galaxies with GalSim", formatter_class=formatter,
        description="Simulate SDSS-like galaxy cutouts (GalSim profiles, seeing, sky noise, Lupton colour).\n"
                    "The same arguments give a byte-identical file.",
        epilog="example:\n  galbench data synth mixed.fits --n 2000 --size 64 --classes elliptical,spiral:2,edge-on")
    synth.add_argument("out", type=Path, help="output catalog FITS file")
    synth.add_argument("--n", type=int, default=2000, help="number of galaxies (default 2000)")
    synth.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--classes", default="elliptical,spiral,edge-on",
                       help="class names with optional weights, NAME[:WEIGHT],... from elliptical, lenticular, "
                            "spiral, edge-on, irregular (default elliptical,spiral,edge-on, equal mix)")
    synth.add_argument("--star-probability", type=float, default=0.3,
                       help="chance that neighbouring stars share the cutout (default 0.3)")
    synth.add_argument("--workers", type=_at_least(1), default=None, help="worker processes (default: all cores)")
    synth.set_defaults(handler=_cmd_data_synth)

    info = data_commands.add_parser("info", help="HDUs, class counts, image shape and bands of a catalog file",
                                    formatter_class=formatter,
                                    epilog="examples:\n  galbench data info sim.fits\n  galbench data info sim.fits --json")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="print the facts as JSON on stdout")
    info.set_defaults(handler=_cmd_data_info)

    montage = data_commands.add_parser("montage", help="a PNG grid of example images per class",
                                       formatter_class=formatter,
                                       epilog="example:\n  galbench data montage sim.fits sim.png --per-class 4")
    montage.add_argument("file", type=Path)
    montage.add_argument("out", type=Path, help="output PNG")
    montage.add_argument("--per-class", type=_at_least(1), default=8, help="images per class (default 8)")
    montage.add_argument("--seed", type=int, default=0, help="which examples to pick (default 0)")
    montage.set_defaults(handler=_cmd_data_montage)

    imp = data_commands.add_parser(
        "import", help="import real images into a catalog FITS file", formatter_class=formatter,
        description="Import images: a folder with a labels CSV (objid + class column; images in FOLDER or "
                    "FOLDER/images named <objid>.jpeg/.png/.fits; without --map every value of the class column "
                    "is a class), a folder with one sub-folder per class (when there is no labels CSV), or a "
                    "Galaxy10 HDF5 file. 16-bit and float PNGs are scaled from their own range to 8 bits; FITS "
                    "science images by --stretch, their NaN pixels filled and counted (column filled_pixels).",
        epilog="example (the Galaxy Zoo 1 sample, 3 classes, 64 px from the central half):\n"
               "  galbench data import ../shared/data/gz1-sdss gz1.fits --class-column gz1_class \\\n"
               "      --map elliptical=0 --map spiral=1,2 --map edge-on=3 --crop 0.5 --size 64")
    imp.add_argument("source", help="folder, or Galaxy10 .h5 file")
    imp.add_argument("out", type=Path, help="output catalog FITS file")
    imp.add_argument("--labels", help="labels CSV (default SOURCE/labels.csv)")
    imp.add_argument("--id-column", default="objid", help="CSV column naming each image (default objid)")
    imp.add_argument("--class-column", default="label", help="CSV column with the source label (default label)")
    imp.add_argument("--map", action="append", metavar="NAME=SRC[,SRC]",
                     help="class NAME from source labels SRC; repeat per class, in label order; rows with "
                          "unmapped labels are dropped and counted")
    imp.add_argument("--crop", help="centre crop: fraction of the side (0.5) or pixels (212)")
    imp.add_argument("--size", type=_at_least(1), help="resize to SIZE x SIZE pixels after cropping")
    imp.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    imp.add_argument("--dedupe", choices=["first"],
                     help="keep the first row of each repeated objid (default: a repeated objid is an error)")
    imp.add_argument("--workers", type=_at_least(1), default=None, help="decoding threads (default: all cores)")
    imp.add_argument("--stretch", help="how FITS science images become 8-bit colour: minmax (default), "
                                       "percentile[:99.5], lupton[:q=8,stretch=0.5,minimum=0]; recorded in the "
                                       "catalog (STRETCH), and by export in the model, so classify stretches alike")
    imp.set_defaults(handler=_cmd_data_import)

    sdss = data_commands.add_parser(
        "sdss", help="fetch a catalog's SDSS colour cutouts (needs a network connection)", formatter_class=formatter,
        description="Fetch SDSS SkyServer colour cutouts for a catalog and write a catalog FITS file.\n"
                    "Catalog: nair-abraham-2010 (VizieR J/ApJS/186/427, the paper's 14,034 galaxies) or a local\n"
                    "FITS/CSV/VOTable with ra/dec (and optionally objid, label, ttype). Cutouts are cached, so a\n"
                    "rerun fetches nothing twice; failed rows are listed in OUT.failed.csv.",
        epilog="examples:\n"
               "  galbench data sdss data/nair-abraham-2010.fits --catalog nair-abraham-2010 --scheme 3way\n"
               "  galbench data sdss gz.fits --catalog my_galaxies.csv --width 128 --height 128 --scale 0.3\n"
               "class schemes from T-type: 3way (elliptical T<=-4, lenticular -3..0, spiral 1..9),\n"
               "  4way (+ irregular-other T>=10)")
    sdss.add_argument("out", type=Path, help="output catalog FITS file")
    sdss.add_argument("--catalog", default="nair-abraham-2010", help="nair-abraham-2010, or a table file")
    sdss.add_argument("--scheme", default="3way", help="class scheme from T-type: 3way or 4way (default 3way)")
    sdss.add_argument("--release", default="dr17", help="SDSS data release (default dr17)")
    sdss.add_argument("--width", type=_at_least(1), default=224, help="cutout width in pixels (default 224)")
    sdss.add_argument("--height", type=_at_least(1), default=224, help="cutout height in pixels (default 224)")
    sdss.add_argument("--scale", type=_positive_float, default=0.4, help="fixed arcsec/pixel (default 0.4)")
    sdss.add_argument("--scale-column", help="scale per galaxy from this size column (e.g. petroR90_r) ...")
    sdss.add_argument("--scale-factor", type=_positive_float, default=0.024, help="... times this factor (default 0.024)")
    sdss.add_argument("--workers", type=_at_least(1), default=4, help="parallel requests (default 4: be polite)")
    sdss.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds per request (default 30)")
    sdss.add_argument("--retries", type=_at_least(0), default=3, help="retries on timeouts and 5xx (default 3)")
    sdss.add_argument("--limit", type=_at_least(1), help="only the first N rows")
    sdss.add_argument("--vizier-url", help="VizieR base URL (or $GALBENCH_VIZIER_URL)")
    sdss.add_argument("--skyserver-url", help="SkyServer base URL, {release} filled in (or $GALBENCH_SKYSERVER_URL)")
    sdss.set_defaults(handler=_cmd_data_sdss)

    run = commands.add_parser(
        "run", help="train every (variant, seed) run of a suite and account for its cost",
        formatter_class=formatter,
        description="Train the variants of a suite over its seeds, recording at each evaluation the epochs, samples,\n"
                    "FLOPs, device-seconds and energy spent, and when each accuracy threshold was first reached.\n"
                    "Results go to reports/<suite>/<hash>/ (or --out). Rerunning the same command skips finished\n"
                    "runs and resumes an interrupted one from its last epoch.",
        epilog="examples:\n  galbench run quickstart\n"
               "  galbench run suites/quickstart.toml --seeds 5 --set train.epochs=3 --set variant.scratch.train.lr=0.02\n"
               "  galbench run quickstart --set train.checkpoint_every='600s'   checkpoint every 10 minutes\n"
               "A second command on the same run directory stops at once with the first one's PID.\n"
               "Results are deterministic on one machine (the same numbers again), not across processors.")
    run.add_argument("suite", help="suite TOML file, or a suite shipped with galbench by name (quickstart)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a suite value (TOML syntax), e.g. train.epochs=3; repeatable")
    run.add_argument("--seeds", help="seed count (5) or list ([0,3,7]), overriding suite.seeds")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N, overriding train.device")
    run.add_argument("--out", type=Path, help="run directory (default reports/<suite>/<hash>)")
    run.add_argument("--executor", choices=["local", "ray"], help="where runs execute (default: the suite's, local)")
    run.add_argument("--address", help="Ray cluster: auto or ray://HOST:PORT (default: a Ray started here)")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    run.set_defaults(handler=_cmd_run)

    report = commands.add_parser(
        "report", help="tables, plots and significance tests of a run directory (no retraining)",
        formatter_class=formatter,
        description="Recompute a suite's statistics from its run directory's event logs and write\n"
                    "RUN_DIR/report/report.md, report.html (self-contained) and report.json, plus rich tables here.",
        epilog="example:\n  galbench report reports/quickstart/<hash>")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--json", action="store_true", help="print report.json to stdout instead of the tables")
    report.set_defaults(handler=_cmd_report)

    compare = commands.add_parser("compare", help="two run directories side by side (machines, code versions)")
    compare.add_argument("run_dir_a", type=Path)
    compare.add_argument("run_dir_b", type=Path)
    compare.set_defaults(handler=_cmd_compare)

    pretrain = commands.add_parser(
        "pretrain", help="make pretrained checkpoints offline (fractals, other catalogs, self-supervised)",
        description="Pretrain a model offline and write a galbench checkpoint that records what it cost.")
    pretrain.set_defaults(handler=_usage(pretrain))
    pretrain_commands = pretrain.add_subparsers(dest="pretrain_command", metavar="SOURCE")
    fractal = pretrain_commands.add_parser(
        "fractal", help="FractalDB-style formula-driven images (Kataoka et al. 2020)", formatter_class=formatter,
        description="Generate a labelled set of fractals (one random IFS per class) and pretrain on it. The set is\n"
                    "streamed to a cached file (memory stays flat at any size) and reused by later pretrainings.\n"
                    "--preset sets the defaults of --classes, --per-class, --recipe, --epochs and --batch-size:\n"
                    "  cpu           32 x 64, galbench's recipe, 8 epochs, batch 128 (minutes on a CPU)\n"
                    "  fractaldb-1k  1,000 x 1,000, FractalDB's recipe, 90 epochs, batch 256 (Kataoka et al. 2020)",
        epilog="examples:\n  galbench pretrain fractal fractal.pt --classes 32 --per-class 64 --size 64 --model alexnet-small\n"
               "  galbench pretrain fractal fdb1k.pt --preset fractaldb-1k --size 64")
    fractal.add_argument("out", type=Path, help="output checkpoint (.pt)")
    fractal.add_argument("--preset", choices=["cpu", "fractaldb-1k"], default="cpu", help="default cpu")
    fractal.add_argument("--classes", type=_at_least(2), help="number of fractal classes (preset: 32 or 1000)")
    fractal.add_argument("--per-class", type=_at_least(1), help="images per class (preset: 64 or 1000)")
    fractal.add_argument("--recipe", choices=["galbench", "fractaldb"], help="how categories and instances are made")
    fractal.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    fractal.add_argument("--seed", type=int, default=0)
    catalog_pre = pretrain_commands.add_parser(
        "catalog", help="supervised pretraining on another galaxy catalog (e.g. simulated galaxies)",
        formatter_class=formatter,
        epilog="example:\n  galbench pretrain catalog sim-pretrained.pt --data sim.fits --model alexnet-small")
    catalog_pre.add_argument("out", type=Path, help="output checkpoint (.pt)")
    catalog_pre.add_argument("--data", type=Path, required=True, help="catalog FITS file to pretrain on")
    catalog_pre.add_argument("--size", type=_at_least(32), help="image size (default: the catalog's)")
    catalog_pre.add_argument("--seed", type=int, default=0)
    ssl = pretrain_commands.add_parser(
        "ssl", help="self-supervised pretraining (SimCLR, BYOL) on any catalog's images, labels unused",
        formatter_class=formatter,
        description="Self-supervised pretraining on the images of a catalog (labels ignored), with galaxy views\n"
                    "(turns, flips, shifts, zooms, PSF blur, sky noise, per-band brightness; never a colour change).\n"
                    "With --probe-data, k-NN and linear probes on its labelled images show whether the\n"
                    "representation improves; exact copies of its validation and test images are left out of\n"
                    "the pretraining. Needs lightly: pip install 'galbench[ssl]'. Rerun to resume.",
        epilog="example:\n  galbench pretrain ssl ssl.pt --data survey.fits --probe-data labelled.fits --method byol \\\n"
               "      --model alexnet-small --epochs 30")
    ssl.add_argument("out", type=Path, help="output checkpoint (.pt); .probe.png and .events.jsonl go beside it")
    ssl.add_argument("--data", type=Path, required=True, help="catalog FITS file whose images to pretrain on")
    ssl.add_argument("--probe-data", type=Path,
                     help="labelled catalog for the probes: fit on its 70%%, scored on 15%% (split as a suite's)")
    ssl.add_argument("--method", choices=["simclr", "byol"], default="simclr", help="default simclr")
    ssl.add_argument("--size", type=int, help="image size (default: the catalog's)")
    ssl.add_argument("--temperature", type=float, default=0.2, help="simclr: NT-Xent temperature (default 0.2)")
    ssl.add_argument("--momentum", type=float, default=0.99,
                     help="byol: the target's EMA rate at the start, rising to 1 (default 0.99)")
    ssl.add_argument("--probes", type=int, default=4, help="probe points after the first (default 4)")
    ssl.add_argument("--seed", type=int, default=0)
    for sub, handler in ((fractal, _cmd_pretrain_fractal), (catalog_pre, _cmd_pretrain_catalog),
                         (ssl, _cmd_pretrain_ssl)):
        sub.add_argument("--model", default="alexnet-small", help="registered model (default alexnet-small)")
        sub.add_argument("--epochs", type=_at_least(1), default=8, help="epochs (default 8)")
        sub.add_argument("--lr", type=_positive_float, default=0.001, help="AdamW learning rate (default 0.001)")
        sub.add_argument("--batch-size", type=_at_least(1), default=128, help="batch size (default 128)")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        sub.set_defaults(handler=handler)
    fractal.set_defaults(epochs=None, batch_size=None)  # from the preset unless given

    export = commands.add_parser(
        "export", help="export a checkpoint to a self-describing, calibrated, parity-checked ONNX model",
        formatter_class=formatter,
        description="Export a galbench checkpoint to ONNX. The graph takes raw uint8 (N, 3, H, W) images and\n"
                    "normalises inside; it outputs logits (raw), probabilities (softmax of logits / T, T fitted on\n"
                    "labelled validation images so that probabilities are calibrated), embeddings and agreement.\n"
                    "Metadata carries classes, input size, crop rule, stretch, temperature and ECE, and the\n"
                    "SHA-256 of the checkpoint and of the graph. ONNX Runtime is checked against PyTorch.",
        epilog="examples:\n  galbench export reports/gz1/<hash>/runs/scratch__seed0/best.pt gz1.onnx --run reports/gz1/<hash>\n"
               "  galbench export best.pt gz1-int8.onnx --run reports/gz1/<hash> --tta 8 --int8\n"
               "  galbench export best.pt m.onnx --data labelled.fits --no-calibrate")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("out", type=Path, help="output .onnx (the checkpoint is copied beside it as .pt)")
    export.add_argument("--run", type=Path, help="run directory: calibrate on its validation split (split.json), "
                                                 "int8 ranges from its training split")
    export.add_argument("--data", type=Path, help="catalog: parity sample; its labelled rows calibrate (and gate int8)")
    export.add_argument("--parity-images", type=int, default=64, help="images for the parity check (default 64)")
    export.add_argument("--no-calibrate", action="store_true", help="keep raw softmax probabilities (T = 1)")
    export.add_argument("--tta", type=int, default=1, choices=[1, 4, 8],
                        help="average over 4 turns or 8 turns and flips (D4) inside the graph (default 1: none)")
    export.add_argument("--int8", action="store_true",
                        help="ONNX Runtime static int8 (QDQ, per-channel weights) for CPU catalogs; fails unless "
                             "validation accuracy is within 0.5 points of fp32 and 99%% of argmaxes agree")
    export.add_argument("--stretch", help="how FITS science images become 8-bit colour at classify: taken from the "
                                          "--run/--data catalog (its STRETCH), and refused if it differs from that; "
                                          "without a catalog minmax (default), percentile[:99.5] or "
                                          "lupton[:q=8,stretch=0.5,minimum=0]")
    export.add_argument("--fp16", action="store_true",
                        help="half-precision weights (uint8 in, float32 out; needs galbench[fp16]); parity is then "
                             "checked to 0.05 in the logits and 99%% argmax agreement")
    export.set_defaults(handler=_cmd_export)

    classify = commands.add_parser(
        "classify", help="classify a catalog (FITS, VOTable, CSV, Parquet) with an exported model",
        formatter_class=formatter,
        description="Classify every galaxy of a catalog: a galbench catalog FITS file (IMAGES HDU), or any FITS\n"
                    "binary table, VOTable, CSV, ECSV or Parquet table with an image_path column of JPEG/PNG/FITS\n"
                    "files relative to the catalog. Writes the catalog's columns (units, nulls, descriptions and\n"
                    "header cards kept) plus pred_label, pred_class, prob_<class>, pred_confidence (and\n"
                    "pred_agreement, bad_image, filled_pixels, embedding where they apply) to a new file in the\n"
                    "format of --out's extension; never edits the input.",
        epilog="examples:\n  galbench classify sim.fits --run reports/quickstart/<hash>\n"
               "  galbench classify big.fits --model winner.onnx --out big.classified.fits --batch-size 512 --resume\n"
               "  galbench classify paths.csv --model winner.onnx --out paths.classified.parquet --embeddings")
    classify.add_argument("input", type=Path, help="catalog: FITS, VOTable (.xml/.vot), CSV, ECSV or Parquet")
    classify.add_argument("--model", type=Path, help="exported .onnx model")
    classify.add_argument("--run", type=Path, help="run directory: use the suite's overall winner")
    classify.add_argument("--out", type=Path, help="output table, format from the extension "
                                                   "(default INPUT.classified.fits)")
    classify.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"],
                          help="auto: ONNX Runtime with a GPU provider, else torch on CUDA, else ONNX Runtime CPU")
    classify.add_argument("--batch-size", type=int, default=256, help="galaxies per batch (default 256)")
    classify.add_argument("--resume", action="store_true",
                          help="reuse finished chunks of an interrupted run (refused if the input or model changed)")
    classify.add_argument("--skip-bad", action="store_true", help="flag unreadable image rows and go on")
    classify.add_argument("--copy-images", action="store_true", help="copy the IMAGES HDU into the output")
    classify.add_argument("--embeddings", action="store_true",
                          help="add column embedding: each galaxy's penultimate-layer vector (float32)")
    classify.add_argument("--fetch", action="store_true",
                          help="a catalog with only ra/dec: fetch (and cache) its SDSS cutouts first (network)")
    classify.add_argument("--scale", type=float,
                          help="with --fetch: arcsec/pixel (default: the model's training scale, else 0.4)")
    classify.add_argument("--release", default="dr17", help="with --fetch: SDSS data release (default dr17)")
    classify.add_argument("--skyserver-url", help="with --fetch: SkyServer base URL (or $GALBENCH_SKYSERVER_URL)")
    classify.add_argument("--executor", default="local", choices=["local", "ray"],
                          help="ray: classify row shards of 8,192 galaxies on a Ray cluster's workers")
    classify.add_argument("--address", help="Ray cluster: auto or ray://HOST:PORT (default: a Ray started here)")
    classify.set_defaults(handler=_cmd_classify)

    models = commands.add_parser(
        "models", help="list the registered models", formatter_class=formatter,
        description="The registered models: galbench's AlexNet variants and recommended timm models, with\n"
                    "parameters and FLOPs per image (measured). Any timm model works as timm:NAME.",
        epilog="examples:\n  galbench models\n  galbench models 'timm:*' --json")
    models.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'alexnet*' or 'timm:*'")
    models.add_argument("--json", action="store_true", help="print the rows as JSON")
    models.set_defaults(handler=_cmd_models)
    return parser


def _add_quiet_everywhere(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet after any sub-command too (`galbench run quickstart -q`), not only before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                if "--quiet" not in sub._option_string_actions:
                    sub.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                     help="no progress or messages on stderr, only errors")
                _add_quiet_everywhere(sub)


def _after_interrupt(args) -> str:
    """What to do after Ctrl-C, by command: what a rerun picks up."""
    if args.command in ("run", "pretrain"):
        return "run the same command again to resume"
    if args.command == "classify":
        return "run the same command " + ("again" if args.resume else "with --resume") + " to continue"
    if args.command == "data" and args.data_command == "sdss":
        return "the cutouts fetched so far are cached; run the same command again to fetch the rest"
    return "nothing half-written was left"



def main(argv: list[str] | None = None) -> int:
    """Entry point of the `galbench` console script; returns the exit code."""
    parser = build_parser()
    _add_quiet_everywhere(parser)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    try:
        args.handler(args)
    except _Usage as usage:
        usage.parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    except GalbenchError as exc:
        always(f"[bold red]error:[/] {escape(str(exc))}")
        return EXIT_BAD_INPUT
    except OSError as exc:
        # a full disk, a read-only file system, no permission: the user's to fix, not a bug
        user_error = user_os_error(exc, exc.filename or getattr(args, "out", None))
        if user_error is None:
            raise
        always(f"[bold red]error:[/] {escape(str(user_error))}")
        return EXIT_BAD_INPUT
    except MemoryError as exc:
        always(f"[bold red]error:[/] out of memory ({escape(str(exc))}); use smaller data or a smaller "
               "data.memory_budget_mb")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        always(f"[yellow]interrupted[/]; {_after_interrupt(args)}")
        return 130
    finally:
        set_quiet(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
