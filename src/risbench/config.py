"""What a validated config asks for: variants, descriptors, distances, benchmark tables.

The JSON schema (workflow/schemas/config.schema.yaml) checks types, fills
defaults and rejects unknown keys; :func:`check` then checks the names that
the schema cannot know (modifications, hashes, model layers, distances) and
that the configured weights exist, so a bad config fails before any job runs.
"""

from __future__ import annotations

DISTANCES_BY_KIND = {
    "binary": ("hamming",),
    "rv": ("rv",),
    "float": ("cosine", "angular", "euclidean"),
}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def variants(config: dict) -> list[str]:
    """Benchmark image variants: ``original`` then every modification, sweeps expanded."""
    from risbench import modify

    modified = modify.expand_sweeps(config["modifications"], config.get("sweeps") or {})
    return ["original", *modified]


def modified_variants(config: dict) -> list[str]:
    return variants(config)[1:]


def descriptors(config: dict) -> dict[str, dict]:
    """Descriptor name -> {kind, origin ("hash" or the model key)}, hashes first."""
    from risbench import hashing

    table = {name: {"kind": hashing.get(name).kind, "origin": "hash"} for name in config["hashes"]}
    for model_key, spec in (config.get("models") or {}).items():
        for name in model_descriptors(model_key, spec):
            table[name] = {"kind": "float", "origin": model_key}
    return table


def model_descriptors(model_key: str, spec: dict) -> list[str]:
    from risbench import features

    return features.descriptor_names(model_key, spec)


def distances(config: dict, descriptor: str) -> list[str]:
    kind = descriptors(config)[descriptor]["kind"]
    return list(config["distances"][kind])


def protocols(config: dict) -> list[str]:
    wanted = config["benchmark"]["protocols"]
    names = []
    if "all" in wanted:
        names.append("all")
    if "distractors" in wanted and config["dataset"]["distractors"] > 0:
        names.append("distractors")
    if "single" in wanted:
        names += [f"single-{v}" for v in variants(config)]
    return names


def check(config: dict) -> None:
    from risbench import features, hashing, modify

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
    for i, name in enumerate(config["hashes"]):
        if name not in hashing.HASHES:
            raise ConfigError(
                f"hashes[{i}] = '{name}' is not a hash; valid hashes: {', '.join(hashing.HASHES)}"
            )
    for model_key, spec in (config.get("models") or {}).items():
        try:
            features.descriptor_names(model_key, spec)
            features.check_weights(model_key, spec)
        except (ValueError, KeyError, features.WeightsUnavailable) as error:
            raise ConfigError(f"models.{model_key}: {error}") from None
    for kind, names in config["distances"].items():
        for name in names:
            if name not in DISTANCES_BY_KIND[kind]:
                raise ConfigError(
                    f"distances.{kind}: '{name}' is not a distance for {kind} descriptors; "
                    f"valid: {', '.join(DISTANCES_BY_KIND[kind])}"
                )
    names = list(descriptors(config))
    if len(names) != len(set(names)):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"descriptor names collide: {', '.join(duplicated)}")
    if config["dataset"]["source"] == "folder" and not config["dataset"].get("folder"):
        raise ConfigError("dataset.folder: required when dataset.source is 'folder'")
