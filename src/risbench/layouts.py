"""The dataset job of a data set laid out by the user (design.md, "Bring your own data set").

- ``variants``: ``DIR/originals/`` and one folder per modification, files named
  by their original's stem. The originals go through :func:`risbench.dataset.build`
  (bad files skipped, duplicates dropped, the split); each variant folder becomes
  a variant list in the originals' base order, as a ``modify`` job's would.
- ``pairs``: references (the index: variant ``original``, role ``base``), queries
  (variant ``queries``, role ``query``) and a ground truth naming, per query, its
  references (``catalog.query_list``).

Every image keeps its exact bytes (``dataset.keep_exact``: a hard link or a
copy, never re-encoded): descriptors see the files as the user made them.
Every file ends up in the manifest, a list, or ``skipped.csv`` with the reason:
a base is dropped with all its variants when its original or one of its
variant files cannot be decoded or is missing, and a query when it cannot be
decoded, is not in the ground truth, or one of its references was skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from risbench import catalog, dataset
from risbench.dataset import DEFAULT_MAX_PIXELS, BadImage, DatasetError, decode, keep_exact
from risbench.sources import (
    DEFAULT_EXTENSIONS,
    QUERIES,
    LayoutError,
    Source,
    display_path,
    find_pairs,
    find_variants,
)

log = logging.getLogger("risbench")


def _undecodable(sources: list[Source], max_pixels: int) -> dict[str, str]:
    """id -> why, for the ``sources`` that cannot be decoded (as the dataset job decodes)."""
    bad = {}
    for source in sources:
        try:
            decode(source.path, max_pixels)
        except BadImage as error:
            bad[source.image_id] = str(error)
    return bad


def _skip(source: Source, reason: str) -> dict:
    return {"path": display_path(source.path), "reason": reason}


def _build(spec: dict, sources: list[Source], images_dir, unused: list[dict], **options):
    """:func:`risbench.dataset.build` with the config's options, exact bytes kept."""
    return dataset.build(
        sources,
        images_dir,
        unused=unused,
        max_pixels=spec.get("max_pixels", DEFAULT_MAX_PIXELS),
        near_duplicate_distance=_distance(spec),
        keep_bytes=True,
        progress=False,
        **options,
    )


def _distance(spec: dict) -> int | None:
    return spec.get("near_duplicate_distance", dataset.DEFAULT_NEAR_DUPLICATE_DISTANCE)


# ------------------------------------------------------------------------------ variants


def _variant_problems(layout, max_pixels: int) -> tuple[dict[str, str], list[dict]]:
    """(original id -> why it is dropped, skipped rows of the variant files): a variant
    file that cannot be decoded, or none for an original."""
    dropped: dict[str, str] = {}
    skipped = []
    for name, found in layout.variants.items():
        bad = _undecodable(found.sources, max_pixels)
        for source in found.sources:
            if source.image_id in bad:
                skipped.append(_skip(source, bad[source.image_id]))
                dropped.setdefault(source.image_id, f"its {name}/ file cannot be used")
        have = {s.image_id for s in found.sources}
        for source in layout.originals.sources:
            if source.image_id not in have:
                dropped.setdefault(source.image_id, f"no file with this stem in {name}/")
    return dropped, skipped


def _variant_lists(layout, original: pd.DataFrame, root: Path, reported: set) -> tuple:
    """Variant name -> its list (the bases' files, exact bytes, in base order), and the
    skipped rows of the variant files whose original is not a base (but for the paths
    in ``reported``, skipped already)."""
    bases = catalog.bases(original)
    wanted = set(bases["image_id"])
    lists, skipped = {}, []
    for name, found in layout.variants.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        files = {s.image_id: s for s in found.sources}
        paths = [str(keep_exact(files[i].path, folder, i)) for i in bases["image_id"]]
        lists[name] = catalog.modified_list(original, name, paths)
        reason = "its original is not a base (a distractor, left out or skipped)"
        skipped += [
            _skip(s, reason)
            for s in found.sources
            if s.image_id not in wanted and display_path(s.path) not in reported
        ]
    return lists, skipped


def _run_variants(spec: dict, images_dir, root: Path):
    layout = find_variants(spec["folder"], spec.get("extensions", DEFAULT_EXTENSIONS))
    dropped, skipped = _variant_problems(layout, spec.get("max_pixels", DEFAULT_MAX_PIXELS))
    originals = layout.originals.sources
    for source in originals:
        if source.image_id in dropped:
            skipped.append(_skip(source, f"dropped with its variants: {dropped[source.image_id]}"))
    unused = [*layout.originals.unused, *(u for f in layout.variants.values() for u in f.unused)]
    built = _build(
        spec,
        [s for s in originals if s.image_id not in dropped],
        images_dir,
        [*unused, *skipped],
        bases=spec.get("bases"),
        distractors=spec.get("distractors", 0),
        sample=spec.get("sample", False),
        seed=spec.get("seed", 0),
        drop_near_duplicates=spec.get("drop_near_duplicates", False),
    )
    built.files = sum(
        len(f.sources) + len(f.unused) for f in (layout.originals, *layout.variants.values())
    )
    original = catalog.original_list(built.manifest)
    reported = {row["path"] for row in skipped}
    lists, not_bases = _variant_lists(layout, original, root, reported)
    return built, {"original": original, **lists}, not_bases


# --------------------------------------------------------------------------------- pairs


def _usable_queries(layout, max_pixels: int) -> tuple[list[Source], list[dict]]:
    """The queries the ground truth lists and that decode, and skipped rows for the rest."""
    truth = layout.truth
    listed = [s for s in layout.queries.sources if s.image_id in truth.references]
    skipped = [
        _skip(s, f"not in the ground truth {truth.path}: not a query")
        for s in layout.queries.sources
        if s.image_id not in truth.references
    ]
    bad = _undecodable(listed, max_pixels)
    skipped += [_skip(s, bad[s.image_id]) for s in listed if s.image_id in bad]
    return [s for s in listed if s.image_id not in bad], skipped


def _run_pairs(spec: dict, images_dir, root: Path):
    extensions = spec.get("extensions", DEFAULT_EXTENSIONS)
    layout = find_pairs(spec["references"], spec["queries"], spec["ground_truth"], extensions)
    queries, skipped = _usable_queries(layout, spec.get("max_pixels", DEFAULT_MAX_PIXELS))
    unused = [*layout.references.unused, *layout.queries.unused, *skipped]
    built = _build(spec, layout.references.sources, images_dir, unused, drop_duplicates=False)
    built.files = sum(len(f.sources) + len(f.unused) for f in (layout.references, layout.queries))
    kept = set(built.manifest["image_id"])
    folder = root / QUERIES
    folder.mkdir(parents=True, exist_ok=True)
    rows, lost = [], []
    for source in queries:
        references = layout.truth.references[source.image_id]
        missing = [r for r in references if r not in kept]
        if missing:
            lost.append(_skip(source, f"its reference {missing[0]} was skipped (see its row)"))
            continue
        path = str(keep_exact(source.path, folder, source.image_id))
        rows.append({"image_id": source.image_id, "references": references, "path": path})
    table = pd.DataFrame(rows, columns=["image_id", "references", "path"])
    lists = {"original": catalog.original_list(built.manifest)}
    lists[QUERIES] = catalog.query_list(table, QUERIES)
    return built, lists, lost


# ----------------------------------------------------------------------------- the stage


def run_stage(
    spec: dict,
    *,
    images_dir,
    manifest,
    image_list,
    reports: dict,
    reports_dir=None,
    variants_root=None,
) -> dataset.Built:
    """The ``dataset`` job of a variants or pairs data set (see
    :func:`risbench.dataset.run_stage`); its own variants' folders and lists are
    ``{variants_root}/{variant}/`` and ``{variants_root}/{variant}.parquet``."""
    if variants_root is None:
        raise DatasetError(f"dataset.source {spec['source']}: no folder for its variants given")
    root = Path(variants_root)
    try:
        run = _run_pairs if spec["source"] == "pairs" else _run_variants
        built, lists, more_skipped = run(spec, images_dir, root)
    except LayoutError as error:
        raise DatasetError(str(error)) from None
    added = pd.DataFrame(more_skipped, columns=dataset.SKIPPED_COLUMNS)
    built.skipped = pd.concat([built.skipped, added], ignore_index=True)
    dataset.log_build(built, _distance(spec), duplicates_kept=spec["source"] == "pairs")
    where = dataset.write_reports(built, reports, reports_dir)
    problem = dataset.too_few(built, needed=1 if spec["source"] == "pairs" else 2)
    if problem is None and spec["source"] == "pairs" and lists[QUERIES].empty:
        problem = "no usable query"
    if problem:
        raise DatasetError(f"{problem}. Why each file was not used: {where}")
    built.manifest.to_parquet(manifest, index=False)
    lists["original"].to_parquet(image_list, index=False)
    for name, table in lists.items():
        if name != "original":
            table.to_parquet(root / f"{name}.parquet", index=False)
        log.info("variant %s: %d images", name, len(table))
    return built
