"""What a validated config asks for: variants, descriptors, distances, benchmark tables.

The JSON schema (workflow/schemas/config.schema.yaml) checks types, fills
defaults and rejects unknown keys; :func:`check` then checks what the schema
cannot know (modification and hash names, model layers and weights, distances,
numbers that must be finite, the dataset folder, the radius grids, the devices),
so a bad config fails before any job runs, naming the key.

Parse-time cheap: the workflow calls this module while it parses, so it imports
nothing heavy (no torch, timm, zarr or pandas) unless a config needs it (a
model layer given as a module path, or `weights: default`, whose checks need
the model library).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from risbench.distance import DISTANCES, DISTANCES_BY_KIND  # noqa: F401 - the workflow reads them here

# Names that become file names and command-line words (variants, descriptors,
# model keys): letters, digits and _ . + - only, so no shell or path trick passes.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# More radii than this is a typo (a step of 1e-9), not a grid: each query keeps
# a count per radius, so memory grows with it.
MAX_RADII = 100_001


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


# ------------------------------------------------------------------ what a config asks for


def variants(config: dict) -> list[str]:
    """Benchmark image variants: ``original``, the data set's own variants
    (:func:`dataset_variants`), then every modification, sweeps expanded."""
    return ["original", *dataset_variants(config), *made_variants(config)]


def made_variants(config: dict) -> list[str]:
    """The variants risbench makes (a ``modify`` job each): the modifications, sweeps
    expanded."""
    from risbench import modify

    return modify.expand_sweeps(config["modifications"], config.get("sweeps") or {})


def dataset_variants(config: dict) -> list[str]:
    """The variants a data set brings (the dataset job lists them, no ``modify`` job):
    source ``variants``, its folders beside ``originals/`` (one directory listing);
    source ``pairs``, its queries. None for the other sources."""
    from risbench import sources

    dataset = config["dataset"]
    if dataset["source"] == "variants":
        return sources.variant_folders(dataset["folder"]) if dataset.get("folder") else []
    if dataset["source"] == "pairs":
        return [sources.QUERIES]
    return []


def descriptors(config: dict) -> dict[str, dict]:
    """Descriptor name -> {kind, origin ("hash" or the model key)}, hashes first."""
    from risbench import hashing

    table = {name: {"kind": hashing.get(name).kind, "origin": "hash"} for name in config["hashes"]}
    for model_key, spec in (config.get("models") or {}).items():
        for name in model_descriptors(model_key, spec):
            table[name] = {"kind": "float", "origin": model_key}
    table.update(compact_descriptors(config))
    return table


def l2_normalized(config: dict) -> list[str]:
    """The descriptors the config L2-normalises (model option ``normalize: l2``),
    in descriptor order: Table 3 merges their Euclidean row with cosine's
    (:mod:`risbench.ranking`)."""
    from risbench import models

    return [
        name
        for model_key, spec in (config.get("models") or {}).items()
        for name, _layer, _pool, norm in models.descriptor_plan(model_key, spec)
        if norm == "l2"
    ]


def compact_descriptors(config: dict) -> dict[str, dict]:
    """The codes of ``compress``: name -> {kind, origin "compress", source}."""
    from risbench import compress

    return {
        name: {"kind": info["kind"], "origin": "compress", "source": info["source"]}
        for name, info in compress.compact_descriptors(config).items()
    }


def training_split(config: dict) -> dict | None:
    """The training split of ``compress`` (share, seed, distractors) when any
    code is configured, else None: then every benchmark leaves it out."""
    from risbench import compress

    return dict(config["compress"]["split"]) if compress.sources(config) else None


def model_descriptors(model_key: str, spec: dict) -> list[str]:
    from risbench import models

    return models.descriptor_names(model_key, spec)


def pairs(config: dict) -> list[tuple[str, str]]:
    """Every (descriptor, distance) the config benchmarks: each descriptor with
    the distances configured for its kind, in descriptor order."""
    return [
        (name, distance)
        for name, info in descriptors(config).items()
        for distance in config["distances"][info["kind"]]
    ]


def protocols(config: dict) -> list[str]:
    """The benchmark protocols: ``queries`` first for a pairs data set (and, with no
    modification configured, alone: the others need modified images); then, of
    ``benchmark.protocols``, ``all``, ``distractors`` (with distractors) and
    ``single-{variant}`` per variant other than a pairs data set's queries."""
    wanted = config["benchmark"]["protocols"]
    if config["dataset"]["source"] == "pairs":
        from risbench import sources

        if not made_variants(config):
            return [sources.QUERIES]
        rest = [p for p in _usual_protocols(config, wanted) if p != f"single-{sources.QUERIES}"]
        return [sources.QUERIES, *rest]
    return _usual_protocols(config, wanted)


def _usual_protocols(config: dict, wanted: list[str]) -> list[str]:
    names = []
    if "all" in wanted:
        names.append("all")
    if "distractors" in wanted and config["dataset"]["distractors"] > 0:
        names.append("distractors")
    if "single" in wanted:
        names += [f"single-{v}" for v in variants(config)]
    return names


# ------------------------------------------------------------------------------ checks


def check(config: dict) -> None:
    """Raises ConfigError (naming the key) for anything that cannot work."""
    _check_finite(config, "")
    _check_modifications(config)
    _check_hashes(config)
    _check_models(config)
    _check_distances(config)
    _check_dataset(config["dataset"])  # first: the variant names come from its folders
    _check_dataset_variants(config)
    _check_compress(config)
    _check_names(config)
    _check_radii(config["benchmark"]["radius"])


def _check_finite(value, key: str) -> None:
    """No NaN or infinity anywhere: the schema's bounds let `.nan` through."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value} is not a finite number")


def _check_modifications(config: dict) -> None:
    from risbench import modify

    for i, name in enumerate(config["modifications"]):
        try:
            modify.parse_variant(name)
        except ValueError as error:
            raise ConfigError(f"modifications[{i}] = '{name}': {error}") from None
    for mod, strengths in (config.get("sweeps") or {}).items():
        for strength in strengths:
            try:
                modify.parse_variant(f"{mod}-{strength:g}")
            except ValueError as error:
                raise ConfigError(f"sweeps.{mod}: {error}") from None


def _check_hashes(config: dict) -> None:
    from risbench import hashing

    for i, name in enumerate(config["hashes"]):
        if name not in hashing.HASHES:
            raise ConfigError(
                f"hashes[{i}] = '{name}' is not a hash; valid hashes: {', '.join(hashing.HASHES)}"
            )


def _check_models(config: dict) -> None:
    from risbench import models

    for model_key, spec in (config.get("models") or {}).items():
        try:
            models.descriptor_names(model_key, spec)
            models.resolve_weights(models.resolve_spec(model_key, spec))
        except (ValueError, KeyError, models.WeightsUnavailable) as error:
            raise ConfigError(f"models.{model_key}: {error}") from None


def _check_distances(config: dict) -> None:
    for kind, names in config["distances"].items():
        for name in names:
            if name not in DISTANCES_BY_KIND[kind]:
                raise ConfigError(
                    f"distances.{kind}: '{name}' is not a distance for {kind} descriptors; "
                    f"valid: {', '.join(DISTANCES_BY_KIND[kind])}"
                )


def _check_compress(config: dict) -> None:
    """Every ``compress`` entry: a float descriptor of this config, known
    methods and sizes, and (expected) enough training vectors."""
    from risbench import compress, encoders

    nbits = config["compress"]["pq_nbits"]
    for source, specs in compress.sources(config).items():
        for i, spec in enumerate(specs):
            try:
                method, size = compress.parse_spec(spec)
                if method == "pq":
                    encoders.pq_sub_quantizers(size, nbits)
            except ValueError as error:
                raise ConfigError(f"compress.{source}[{i}]: {error}") from None
    plain = {n: i for n, i in descriptors(config).items() if i["origin"] != "compress"}
    for source in compress.sources(config):
        if plain.get(source, {}).get("kind") != "float":
            floats = [n for n, i in plain.items() if i["kind"] == "float"]
            raise ConfigError(
                f"compress.{source}: not a float descriptor of this config; "
                f"float descriptors: {', '.join(floats) or 'none (configure models)'}"
            )
    _check_training_size(config)


def _predicted_bases(config: dict) -> list[str] | None:
    """The base image ids the dataset job will choose, as far as the config tells
    (demo and folder sources, no image skipped); None when it cannot tell."""
    from risbench import dataset, sources

    spec = config["dataset"]
    if spec["source"] == "demo":
        found = sources.demo_sources()
    elif spec["source"] == "folder":
        found = sources.find_folder(spec["folder"], spec["extensions"], spec["recursive"]).sources
    else:
        return None
    ids = [source.image_id for source in found]
    try:
        roles = dataset.split_roles(
            ids, spec.get("bases"), spec["distractors"], sample=spec["sample"], seed=spec["seed"]
        )
    except ValueError:
        return None  # _check_dataset names the problem
    return [image_id for image_id, role in zip(ids, roles, strict=True) if role == "base"]


def _check_training_size(config: dict) -> None:
    """The split's training vectors, predicted from the image ids the dataset
    job will choose, suffice for every method (the job checks the real count)."""
    from risbench import compress, split

    bases = _predicted_bases(config)
    if bases is None:
        return
    chosen, nbits = config["compress"]["split"], config["compress"]["pq_nbits"]
    held = len(split.held_out_groups(bases, chosen))
    distractors = config["dataset"]["distractors"] if chosen["distractors"] else 0
    training = distractors + held * len(variants(config))
    for source, specs in compress.sources(config).items():
        for i, spec in enumerate(specs):
            needed = compress.min_training(*compress.parse_spec(spec), nbits)
            if training < needed:
                raise ConfigError(
                    f"compress.{source}[{i}] = {spec}: needs {needed} training vectors; "
                    f"compress.split (share {chosen['share']}, seed {chosen['seed']}) holds "
                    f"out {held} of {len(bases)} base groups: {held} x "
                    f"{len(variants(config))} variants + {distractors} distractors = "
                    f"{training}. Raise the share, try another seed, add images or "
                    "choose a smaller size"
                )


def _check_names(config: dict) -> None:
    """Every variant and descriptor name is safe in a path and a command line, and
    descriptor names do not collide."""
    for model_key in config.get("models") or {}:
        _safe(model_key, f"models.{model_key}")
    for variant in variants(config):
        _safe(variant, f"modifications: variant '{variant}'")
    names = list(descriptors(config))
    for name in names:
        _safe(name, f"descriptor '{name}'")
    if len(names) != len(set(names)):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"descriptor names collide: {', '.join(duplicated)}")


def _safe(name: str, key: str) -> None:
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"{key}: {name!r} may hold only letters, digits and _ . + - "
            "(it becomes a file name and a command-line word)"
        )


def _check_dataset(dataset: dict) -> None:
    """The source's folders exist and hold enough images, counted as the dataset job
    will count them (:mod:`risbench.sources`); a variants or pairs data set is laid
    out as it must be (errors name the file, and the line of the ground truth)."""
    from risbench import sources

    if dataset["source"] not in ("folder", "variants", "pairs"):
        return
    try:
        if dataset["source"] == "pairs":
            _check_pairs(dataset)
            return
        folder = _folder(dataset, "folder")
        extensions = dataset["extensions"]
        if dataset["source"] == "variants":
            found = len(sources.find_variants(folder, extensions).originals.sources)
        else:
            found = len(sources.find_folder(folder, extensions, dataset["recursive"]).sources)
    except sources.LayoutError as error:
        raise ConfigError(f"dataset ({dataset['source']}): {error}") from None
    needed = dataset["distractors"] + max(2, dataset.get("bases") or 2)
    if found < needed:
        raise ConfigError(
            f"dataset.distractors = {dataset['distractors']}, dataset.bases = "
            f"{dataset.get('bases')}: {folder} holds {found} image file(s) with the "
            f"configured extensions, fewer than the {needed} needed (distractors + bases, "
            "at least 2 bases)"
        )


def _folder(dataset: dict, key: str) -> str:
    """``dataset.{key}``, a folder that exists (a file for the ground truth)."""
    path = dataset.get(key)
    if not path:
        raise ConfigError(f"dataset.{key}: required when dataset.source is '{dataset['source']}'")
    exists = Path(path).is_file() if key == "ground_truth" else Path(path).is_dir()
    if not exists:
        kind = "file" if key == "ground_truth" else "folder"
        raise ConfigError(f"dataset.{key}: {path} is not a {kind} (from {os.getcwd()})")
    return path


# Keys of the split that a pairs data set does not have: its references are the index
# and its ground truth names them, so none may be dropped or set aside.
_PAIRS_FIXED = {"bases": None, "distractors": 0, "sample": False, "drop_near_duplicates": False}


def _check_pairs(dataset: dict) -> None:
    from risbench import sources

    for key, value in _PAIRS_FIXED.items():
        if dataset.get(key, value) != value:
            raise ConfigError(
                f"dataset.{key} = {dataset[key]}: not for dataset.source 'pairs' (its "
                "references are the index and its ground truth names them: none is set aside)"
            )
    folders = [_folder(dataset, key) for key in ("references", "queries", "ground_truth")]
    sources.find_pairs(*folders, extensions=dataset["extensions"])


def _check_dataset_variants(config: dict) -> None:
    """A data set's own variant names are safe names that no other variant has; a
    pairs data set is neither screened (a stage keeps the first bases) nor split for
    ``compress`` (the split holds out base groups): a query's references need not be
    among the bases kept."""
    if config["dataset"]["source"] == "pairs":
        if (config.get("screening") or {}).get("stages"):
            raise ConfigError("screening.stages: not for dataset.source 'pairs'")
        if training_split(config) is not None:  # it would hold out references queries name
            raise ConfigError("compress: not for dataset.source 'pairs' (yet)")
    own = dataset_variants(config)
    for name in own:
        _safe(name, f"dataset.folder: variant folder '{name}'")
    clash = sorted(set(own) & {"original", *made_variants(config)})
    if clash:
        raise ConfigError(
            f"dataset.folder: variant folder(s) {', '.join(clash)} have the name of "
            "a variant risbench makes (modifications) or of the originals; rename them"
        )


def _check_radii(radius: dict) -> None:
    for distance, grid in radius.items():
        step, top = grid.get("step"), grid.get("max")
        if step is None:
            continue
        if top is None and distance == "euclidean":
            continue  # its default largest radius depends on the data: checked by the engine
        if top is None:
            from risbench import metrics

            top = metrics.DEFAULT_MAX_RADIUS[distance]
        count = math.floor(top / step) + 1
        if count > MAX_RADII:
            raise ConfigError(
                f"benchmark.radius.{distance}.step = {step}: {count} radii up to {top}; "
                f"at most {MAX_RADII} (each query keeps a count per radius)"
            )


# ------------------------------------------------------------------------- config files


def load_file(path: str | os.PathLike) -> dict:
    """A YAML config file read strictly: duplicate keys and YAML tags
    (``!!python/object`` ...) are errors naming the file and line."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"{path}, line {line}: duplicate key '{key}'")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.load(f, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark
        where = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path}{where}: YAML tags such as {error.problem.split()[-1]} are not allowed "
            "in a config file"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys at the top level")
    return loaded
