"""The risbench command line: one subcommand per workflow step, plus ``hash``.

Workflow rules call these subcommands; each takes its slice of the config as
one JSON argument (``--spec``) so Snakemake sees exactly the parameters a job
depends on. Every subcommand logs what it read and wrote to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from risbench.jobtime import compute

log = logging.getLogger("risbench")


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"{what}: expected NAME=PATH, got '{value}'")
        pairs[key] = path
    return pairs


def cmd_dataset(args) -> None:
    from risbench import dataset

    reports = {
        "skipped": args.skipped,
        "duplicates": args.duplicates,
        "near_duplicates": args.near_duplicates,
    }
    try:
        spec = json.loads(args.spec)
    except ValueError as error:
        raise SystemExit(f"dataset: --spec is not valid JSON: {error}") from None
    try:
        with compute("dataset"):
            dataset.run_stage(
                spec,
                images_dir=args.images_dir,
                manifest=args.manifest,
                image_list=args.list,
                reports=reports,
                reports_dir=args.reports_dir,
                source_dir=args.source_dir,
                variants_root=args.variants_root,
            )
    except dataset.DatasetError as error:
        raise SystemExit(f"dataset: {error}") from None


def cmd_download(args) -> None:
    from risbench import download

    try:
        download.prepare(
            args.archive,
            url=args.url,
            sha256=args.sha256,
            unpack_to=args.unpack_to,
            max_unpacked_gb=args.max_unpacked_gb,
            retries=args.retries,
            timeout=args.timeout,
        )
    except download.DownloadError as error:
        raise SystemExit(f"download: {error}") from None


def cmd_modify(args) -> None:
    from risbench import modify

    modify.modify_variant(
        args.variant,
        args.originals,
        args.images_dir,
        args.list,
        reencode_quality=args.reencode_quality,
    )
    log.info("%s: images in %s, list %s", args.variant, args.images_dir, args.list)


def cmd_catalog(args) -> None:
    import pandas as pd

    from risbench import catalog

    table = catalog.assemble([pd.read_parquet(p) for p in args.lists])
    table.to_parquet(args.out, index=False)
    log.info("catalog: %d images, variants %s", len(table), table["variant"].unique().tolist())


def cmd_hash(args) -> None:
    from risbench import hashing

    status = 0
    for path in args.files:
        try:
            code = hashing.hash_file(args.method, path)
        except (OSError, ValueError) as error:
            print(f"risbench hash: {path}: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"{hashing.code_hex(args.method, code)}\t{path}")
    sys.exit(status)


def cmd_index(args) -> None:
    from risbench import config, imageindex

    output, append = (args.add, True) if args.add else (args.output, args.append)
    if output is None:
        raise SystemExit("risbench index: give -o INDEX (a new index) or --add INDEX")
    try:
        models = config.load_file(args.config).get("models") if args.config else None
        index, failed = imageindex.index_files(
            output,
            args.images,
            descriptor=args.descriptor,
            distance=args.distance,
            radius=args.radius,
            run=args.run,
            models=models,
            append=append,
            encoder=args.encoder,
        )
    except (ValueError, OSError) as error:
        raise SystemExit(f"risbench index: {error}") from None
    for path, why in failed.items():
        print(f"risbench index: {path}: {why}", file=sys.stderr)
    log.info(
        "%s: %d images, %s %s radius %g", output, len(index.images), index.descriptor.name,
        index.distance, index.radius,
    )  # fmt: skip
    sys.exit(1 if failed else 0)


def cmd_query(args) -> None:
    from risbench import imageindex

    photos = imageindex.expand(args.photos)
    try:
        index = imageindex.ImageIndex.load(args.index, args.descriptor, args.encoder)
        answers = index.query_many(photos)
    except (ValueError, OSError) as error:
        raise SystemExit(f"risbench query: {error}") from None
    status = 0
    for photo, answer in zip(photos, answers, strict=True):
        if isinstance(answer, imageindex.UnreadableImage):
            print(f"risbench query: {answer}", file=sys.stderr)
            status = 1
        elif args.json:
            print(imageindex.answer_json(photo, answer))
        else:
            print(imageindex.answer_text(photo, answer))
    sys.exit(status)


def cmd_hash_store(args) -> None:
    from risbench import hashing

    hashing.hash_variant(args.list, _pairs(args.store, "--store"))


def cmd_extract(args) -> None:
    import pandas as pd

    from risbench import features

    images = pd.read_parquet(args.list)
    outputs = _pairs(args.store, "--store")
    with compute("model and forward passes"):
        features.extract(
            args.model,
            json.loads(args.spec),
            images["path"].tolist(),
            outputs,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            variant=images["variant"].iloc[0] if len(images) else None,
        )
    log.info("%s: %d images -> %d stores", args.model, len(images), len(outputs))


def cmd_compress(args) -> None:
    from risbench import compress

    outputs: dict[str, dict[str, str]] = {}
    for key, path in _pairs(args.output, "--output").items():
        name, sep, variant = key.partition("/")
        if not sep:
            raise SystemExit(f"--output: expected NAME/VARIANT=PATH, got '{key}={path}'")
        outputs.setdefault(name, {})[variant] = path
    try:
        compress.run(
            args.source,
            _pairs(args.list, "--list"),
            _pairs(args.store, "--store"),
            outputs,
            json.loads(args.spec),
            _pairs(args.encoder, "--encoder"),
        )
    except ValueError as error:
        raise SystemExit(f"compress: {error}") from None


def cmd_benchmark(args) -> None:
    from risbench import benchmark

    tables, stats = _pairs(args.table, "--table"), _pairs(args.stats, "--stats")
    queries = _pairs(args.queries, "--queries")
    if set(tables) != set(stats):
        raise SystemExit("benchmark: every protocol needs both a --table and a --stats")
    if set(queries) - set(tables):
        raise SystemExit(f"benchmark: --queries of {sorted(set(queries) - set(tables))}, "
                         "protocols with no --table")  # fmt: skip
    benchmark.run(
        args.descriptor,
        args.distance,
        _pairs(args.list, "--list"),
        _pairs(args.store, "--store"),
        {p: benchmark.Outputs(tables[p], stats[p], queries.get(p)) for p in tables},
        json.loads(args.spec),
        bases=args.bases,
        run_index=args.run_index,
    )


def cmd_screen_stage(args) -> None:
    from risbench import screening

    try:
        table = screening.screen_stage(
            args.stats,
            args.out,
            stage=args.stage,
            bases=args.bases,
            min_f1=args.min_f1,
            top_k=args.top_k,
        )
    except screening.ScreeningError as error:
        raise SystemExit(f"screen: {error}") from None
    for row in table.itertuples():
        log.info(
            "stage %d (%d bases): %s %s best F1 %.4f: %s",
            row.stage,
            row.bases,
            row.descriptor,
            row.distance,
            row.f1,
            "kept" if row.kept else "dropped",
        )
    log.info("stage %d kept %d of %d pairs", args.stage, int(table["kept"].sum()), len(table))


def cmd_screen_table(args) -> None:
    from risbench import screening

    final_bases = screening.base_count(args.images) if args.images else None
    table = screening.summary_table(args.stages, args.final, final_bases)
    screening.write_summary(table, args.csv, args.markdown)
    log.info("screening table: %d rows -> %s", len(table), args.csv)


def cmd_summarize(args) -> None:
    from risbench import report
    from risbench.results import ResultsError

    try:
        with compute("tables and figures"):
            report.summarize(
                args.runs,
                tables_dir=args.tables_dir,
                figures_dir=args.figures_dir,
                timings=args.timings,
                images=args.images,
                robustness=args.robustness,
                l2_normalized=args.l2_normalized,
                own_variants=args.own_variants,
            )
    except ResultsError as error:
        raise SystemExit(f"summarize: {error}") from None
    log.info("summary of %d run indexes, %d timing files", len(args.runs), len(args.timings))


# ------------------------------------------------------------------------ arguments


def _dataset_args(p) -> None:
    p.add_argument("--spec", required=True, help="the config's dataset section as JSON")
    p.add_argument("--images-dir", required=True, help="folder of the decoded originals (output)")
    p.add_argument("--manifest", required=True, help="one row per source image (parquet, output)")
    p.add_argument("--list", required=True, help="the original variant's image list (output)")
    p.add_argument("--skipped", required=True, help="files not used, with the reason (CSV)")
    p.add_argument("--duplicates", required=True, help="exact duplicates dropped (CSV)")
    p.add_argument("--near-duplicates", default=None, help="near-duplicate pairs (CSV)")
    p.add_argument(
        "--reports-dir",
        default=None,
        help="also write skipped.csv, duplicates.csv and near_duplicates.csv here "
        "(a log folder: kept when the job fails)",
    )
    p.add_argument(
        "--source-dir",
        default="results/download/mirflickr25k",
        help="the unpacked archive (source: mirflickr)",
    )
    p.add_argument(
        "--variants-root",
        default=None,
        help="sources variants and pairs: their own variants go to ROOT/{variant}/ and "
        "ROOT/{variant}.parquet (output)",
    )


def _download_args(p) -> None:
    p.add_argument("--url", default=None, help="omitted: unpack the archive already there")
    p.add_argument("--sha256", default=None, help="expected SHA-256; omitted: not verified")
    p.add_argument("--archive", required=True, help="the archive file (.part while downloading)")
    p.add_argument("--unpack-to", default=None, help="unpack the zip archive into this folder")
    p.add_argument(
        "--max-unpacked-gb",
        type=float,
        default=None,
        help="refuse archives that declare more (default: 50 x the archive's size)",
    )
    p.add_argument("--retries", type=int, default=3, help="resumed attempts after interruptions")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data")


def _modify_args(p) -> None:
    p.add_argument("--variant", required=True, help="the variant, e.g. rotate-2 or crop-10+jpeg-30")
    p.add_argument("--originals", required=True, help="the original variant's image list")
    p.add_argument("--images-dir", required=True, help="folder of the modified images (output)")
    p.add_argument("--list", required=True, help="this variant's image list (output)")
    p.add_argument(
        "--reencode-quality",
        type=int,
        default=None,
        help="write every image as JPEG at this quality",
    )


def _catalog_args(p) -> None:
    p.add_argument("--out", required=True, help="the catalog, images.parquet (output)")
    p.add_argument("lists", nargs="+", help="the variant lists, original first")


def _hash_args(p) -> None:
    from risbench.hashing import HASHES

    p.add_argument("method", choices=list(HASHES), metavar="METHOD", help=", ".join(HASHES))
    p.add_argument("files", nargs="+", metavar="FILE", help="image files")


def _index_args(p) -> None:
    p.add_argument(
        "--descriptor", help="any hash, CNN descriptor or compact code (a new index: required)"
    )
    p.add_argument("--distance", help="default: the descriptor kind's first (cosine for CNN)")
    p.add_argument("--radius", type=float, help="in the distance's units (hamming: a fraction)")
    p.add_argument("--run", help="or: the best radius of this finished results folder's benchmark")
    p.add_argument("--config", help="a config file whose models define the CNN descriptor")
    p.add_argument(
        "--encoder",
        help="a compact code's encoder file (default: RESULTS/descriptors/D/encoder.npz of "
        "--run); with --add: refuse the index unless it was built with this encoder",
    )
    p.add_argument("-o", "--output", help="the index file to write")
    p.add_argument("--append", action="store_true", help="add the images to the index at -o")
    p.add_argument("--add", metavar="INDEX", help="add the images to INDEX (= -o INDEX --append)")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files and folders")


def _query_args(p) -> None:
    p.add_argument("index", help="an index file written by risbench index")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files and folders")
    p.add_argument("--json", action="store_true", help="one JSON object per photo and line")
    p.add_argument("--descriptor", help="refuse an index of another descriptor")
    p.add_argument("--encoder", help="refuse an index built with another encoder file")


def _hash_store_args(p) -> None:
    p.add_argument("--list", required=True, help="the variant's image list (parquet)")
    p.add_argument("--store", action="append", default=[], help="HASH=PATH, repeated")


def _extract_args(p) -> None:
    p.add_argument("--model", required=True, help="the model's key in the config")
    p.add_argument("--spec", required=True, help="the model's config entry as JSON")
    p.add_argument("--list", required=True, help="the variant's image list (parquet)")
    p.add_argument("--store", action="append", default=[], help="DESCRIPTOR=PATH, repeated")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")


def _compress_args(p) -> None:
    p.add_argument("--source", required=True, help="the float descriptor to learn codes from")
    p.add_argument("--spec", required=True, help="JSON: methods (NAME: SPEC), split, pq_nbits")
    p.add_argument("--list", action="append", default=[], help="VARIANT=PATH, repeated")
    p.add_argument("--store", action="append", default=[], help="VARIANT=PATH of the source")
    p.add_argument("--output", action="append", default=[], help="NAME/VARIANT=PATH, repeated")
    p.add_argument(
        "--encoder", action="append", default=[], help="NAME=PATH of the fitted encoder, repeated"
    )


def _benchmark_args(p) -> None:
    p.add_argument("--descriptor", required=True, help="the descriptor its stores must hold")
    p.add_argument("--distance", required=True, help="the distance to sweep")
    p.add_argument("--list", action="append", default=[], help="VARIANT=PATH, repeated")
    p.add_argument("--store", action="append", default=[], help="VARIANT=PATH, repeated")
    p.add_argument("--spec", required=True, help="the config's benchmark section as JSON")
    p.add_argument("--table", action="append", default=[], help="PROTOCOL=PATH (parquet)")
    p.add_argument("--stats", action="append", default=[], help="PROTOCOL=PATH (JSON)")
    p.add_argument(
        "--queries", action="append", default=[], help="PROTOCOL=PATH (per-query outcomes)"
    )
    p.add_argument("--run-index", default=None, help="the run index naming every output")
    p.add_argument(
        "--bases",
        type=int,
        default=None,
        help="only the first N base groups (and the distractors): a screening stage",
    )


def _screen_args(p) -> None:
    screen = p.add_subparsers(
        dest="screen_command", required=True, metavar="STEP", help="stage or table"
    )
    q = screen.add_parser("stage", help="one stage's decision from its benchmark stats")
    q.add_argument("--stage", type=int, required=True, help="the stage's number (1, 2, ...)")
    q.add_argument("--bases", type=int, required=True, help="the stage's number of bases")
    q.add_argument("--min-f1", type=float, default=None, help="keep best F1 >= this")
    q.add_argument("--top-k", type=int, default=None, help="then keep at most the K best")
    q.add_argument("--out", required=True, help="the stage table (CSV, with a kept column)")
    q.add_argument("stats", nargs="+", help="the stage's benchmark stats JSON files")
    q.set_defaults(func=cmd_screen_stage)
    q = screen.add_parser("table", help="every stage (and the full run) in one table")
    q.add_argument("--stages", nargs="+", required=True, help="stage tables, in stage order")
    q.add_argument("--final", nargs="*", default=[], help="full-run stats (protocol all)")
    q.add_argument("--images", default=None, help="the catalog: the full run's base count")
    q.add_argument("--csv", required=True, help="the screening table (CSV, output)")
    q.add_argument("--markdown", default=None, help="the same table as Markdown (output)")
    q.set_defaults(func=cmd_screen_table)


def _summarize_args(p) -> None:
    p.add_argument(
        "--runs", nargs="+", required=True, help="the benchmark jobs' run index JSON files"
    )
    p.add_argument(
        "--timings", nargs="*", default=[], help="the Snakemake benchmark: files, exactly those"
    )
    p.add_argument("--images", help="the catalog (images.parquet), for the example sheet")
    p.add_argument("--tables-dir", required=True, help="folder of the tables (output)")
    p.add_argument("--figures-dir", required=True, help="folder of the figures (output)")
    p.add_argument("--robustness", action="store_true", help="best F1 against strength (sweeps)")
    p.add_argument(
        "--l2-normalized",
        nargs="*",
        default=[],
        help="descriptors the config L2-normalises: Table 3 shows their Euclidean "
        "ranking as the cosine one",
    )
    p.add_argument(
        "--own-variants",
        nargs="*",
        default=[],
        help="the data set's own modified copies (source variants): Table 4 names them "
        "after their folders",
    )


# name: (one-line help, arguments, command). For people first, then the steps
# the workflow's rules run (one per rule).
FOR_PEOPLE = {
    "hash": ("print the hash of image files: HEX CODE, a tab, FILE", _hash_args, cmd_hash),
    "index": ("index images for reverse image search (-o new, --add more)", _index_args, cmd_index),
    "query": ("the indexed images within the radius of each photo", _query_args, cmd_query),
}
WORKFLOW_STEPS = {
    "dataset": ("collect, decode and split the source images", _dataset_args, cmd_dataset),
    "download": ("download (resumable, verified) and unpack", _download_args, cmd_download),
    "modify": ("make one modified variant of the base images", _modify_args, cmd_modify),
    "catalog": ("join the variant lists into images.parquet", _catalog_args, cmd_catalog),
    "hash-store": ("every configured hash of one variant", _hash_store_args, cmd_hash_store),
    "extract": ("CNN features of one variant, one pass a model", _extract_args, cmd_extract),
    "compress": ("compact codes of a float descriptor, fit once", _compress_args, cmd_compress),
    "benchmark": ("radius sweeps of a descriptor and distance", _benchmark_args, cmd_benchmark),
    "screen": ("staged screening (paper 6.4)", _screen_args, None),
    "summarize": ("paper tables and figures", _summarize_args, cmd_summarize),
}


def _command_list() -> str:
    def block(title, commands):
        rows = [f"  {name:<12} {help_}" for name, (help_, _, _) in commands.items()]
        return "\n".join([title, *rows])

    return "\n\n".join(
        [
            block("commands:", FOR_PEOPLE),
            block("workflow steps (run by the rules):", WORKFLOW_STEPS),
        ]
    )


def parser() -> argparse.ArgumentParser:
    from risbench import __version__

    top = argparse.ArgumentParser(
        prog="risbench",
        description="Benchmark image descriptors for reverse image search.",
        epilog=_command_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"risbench {__version__}")
    sub = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of the commands below"
    )
    for name, (help_, add_arguments, command) in {**FOR_PEOPLE, **WORKFLOW_STEPS}.items():
        p = sub.add_parser(name, description=help_[0].upper() + help_[1:] + ".")
        add_arguments(p)
        if command is not None:
            p.set_defaults(func=command)
    return top


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
