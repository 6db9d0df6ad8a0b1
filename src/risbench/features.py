"""CNN features: every configured layer, pooling and normalisation in one forward pass.

``extract`` decodes images in DataLoader workers, runs the network once per batch
with forward hooks on the tapped modules (the forward stops as soon as the
deepest tap has fired), pools each 4-D map globally (avg and/or max) as soon as
the hook sees it, optionally L2-normalises, and streams float32 rows into one
descriptor store per descriptor (``store.MultiStoreWriter``: atomic publish).

Descriptor names: ``{model}_{layer}_{pool}[_norm_l2]`` for conv maps and
``{model}_{layer}[_norm_l2]`` for vectors (``flatten``, ``fc1``, ``predictions``),
lower case, with module paths' dots as underscores.

The models, the Keras alias table and the weights live in :mod:`risbench.models`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import threading
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import store
from .dataset import to_rgb
from .models import (
    ModelSpec,
    Preprocess,
    Tap,
    WeightsRef,
    WeightsUnavailable,
    aliases_for,
    build_network,
    descriptor_names,
    descriptor_plan,
    preprocessing,
    resolve_spec,
    resolve_tap,
    resolve_weights,
    sha256_file,
)

__all__ = [
    "Descriptor",
    "Extractor",
    "ImageDecodeError",
    "WeightsUnavailable",
    "build_model",
    "check_weights",
    "descriptor_names",
    "extract",
    "load_image",
    "plan",
    "tap_shapes",
]

RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageDecodeError(RuntimeError):
    """An image file could not be read; the message names the file."""


@dataclass(frozen=True)
class Descriptor:
    name: str
    layer: str
    tap: Tap
    pooling: str | None  # None for vector layers
    normalize: str  # 'none' | 'l2'


# ------------------------------------------------------------------------ planning


def check_weights(model_key: str, spec: dict) -> None:
    """Raises WeightsUnavailable when the weights cannot be had offline (no model build)."""
    resolve_weights(resolve_spec(model_key, spec))


def plan(model_key: str, spec: dict | ModelSpec) -> list[Descriptor]:
    """The descriptors of a model entry, in the order of :func:`models.descriptor_plan`."""
    s = resolve_spec(model_key, spec)
    return [
        Descriptor(name, layer, resolve_tap(s, layer), pool, norm)
        for name, layer, pool, norm in descriptor_plan(s.key, s)
    ]


# ---------------------------------------------------------------------- layer taps


class _StopForward(Exception):
    """Raised by the last tap's hook: the rest of the network is not needed."""


def _post(output: torch.Tensor, tap: Tap) -> torch.Tensor:
    if tap.post == "softmax":
        return torch.softmax(output.float().flatten(1), dim=1)
    if tap.post == "flatten":
        return output.flatten(1)
    return output


class TapSet:
    """Forward hooks on the modules of some layers; ``run`` returns each layer's reduced output.

    ``reduce(layer, tap, output)`` is applied inside the hook, so big maps are pooled
    at once (and later in-place ops of the network cannot change what was taken).
    A run's state is its thread's: several threads may run the model at once.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        taps: dict[str, Tap],
        reduce,
        *,
        label: str = "",
        aliases: list[str] = (),
    ):
        self.taps = taps
        self.reduce = reduce
        self.by_module: dict[str, list[tuple[str, Tap]]] = defaultdict(list)
        for layer, tap in taps.items():
            self.by_module[tap.module].append((layer, tap))
        self.handles = []
        for path, items in self.by_module.items():
            try:
                module = model.get_submodule(path)
            except AttributeError as e:
                layers = [layer for layer, _ in items]
                raise ValueError(
                    f"{label}: layer {layers[0]!r} is neither an alias "
                    f"({', '.join(sorted(aliases)) or 'none'}) nor a module path "
                    f"of the model ({e})"
                ) from None
            self.handles.append(module.register_forward_hook(functools.partial(self._hook, path)))
        self.label = label
        self.state = threading.local()  # a run's calls, values and early stop

    def _hook(self, path, module, args, output):
        run = self.state
        index = run.calls[path]
        run.calls[path] = index + 1
        for layer, tap in self.by_module[path]:
            if (tap.call or 0) == index:
                if not torch.is_tensor(output):
                    raise TypeError(
                        f"{self.label}: layer {layer!r} (module {path!r}) returns "
                        f"{type(output).__name__}, not a tensor; tap another module"
                    )
                run.values[layer] = self.reduce(layer, tap, output)
        if run.early_stop and len(run.values) == len(self.taps):
            raise _StopForward

    def run(self, model: torch.nn.Module, x: torch.Tensor, *, validate: bool = False) -> dict:
        """One forward pass; ``validate`` runs it whole and checks how often each module ran."""
        run = self.state
        run.calls, run.values, run.early_stop = Counter(), {}, not validate
        try:
            model(x)
        except _StopForward:
            pass
        if validate:
            for layer, tap in self.taps.items():
                count = run.calls[tap.module]
                if layer not in run.values:
                    raise ValueError(
                        f"{self.label}: layer {layer!r}: module {tap.module!r} did not run "
                        "in the forward pass"
                    )
                if tap.call is None and count != 1:
                    raise ValueError(
                        f"{self.label}: layer {layer!r}: module {tap.module!r} runs {count} "
                        "times per forward pass; tap a module that runs once (or an alias)"
                    )
        return run.values

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _alias_names(s: ModelSpec) -> list[str]:
    return list(aliases_for(s.source, s.arch))


def _pool(output: torch.Tensor, pool: str) -> torch.Tensor:
    dims = (2, 3) if output.ndim == 4 else (1,)  # NCHW maps; (N, tokens, C) sequences
    if pool == "avg":
        return output.mean(dim=dims, dtype=torch.float32)
    return output.amax(dim=dims).float()


def _make_reducer(poolings: dict[str, tuple[str | None, ...]], label: str):
    def reduce(layer: str, tap: Tap, output: torch.Tensor) -> dict:
        output = _post(output, tap)
        pools = poolings[layer]
        if pools == (None,):  # a copy: later in-place ops (ReLU(inplace)) must not change it
            return {None: output.flatten(1).to(torch.float32, copy=True)}
        if output.ndim not in (3, 4):
            raise ValueError(
                f"{label}: layer {layer!r} gives a {tuple(output.shape[1:])} output, "
                "which cannot be pooled"
            )
        return {pool: _pool(output, pool) for pool in pools}

    return reduce


def _shape_reducer(layer: str, tap: Tap, output: torch.Tensor) -> tuple[int, ...]:
    return tuple(_post(output, tap).shape[1:])


def _shapes(model, s: ModelSpec, layers, size: int, device) -> dict[str, tuple[int, ...]]:
    taps = {layer: resolve_tap(s, layer) for layer in layers}
    tapset = TapSet(model, taps, _shape_reducer, label=f"model {s.key!r}", aliases=_alias_names(s))
    try:
        with torch.inference_mode():
            x = torch.zeros(1, 3, size, size, device=device)
            return dict(tapset.run(model, x, validate=True))
    finally:
        tapset.remove()


@functools.lru_cache(maxsize=32)
def meta_shapes(s: ModelSpec, layers: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    size = preprocessing(s).input_size
    model = build_network(s, WeightsRef("random", "random"), size, device="meta")
    return _shapes(model, s, layers, size, "meta")


def tap_shapes(
    model_key: str, spec: dict, *, device: str = "meta", layers: list[str] | None = None
) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch axis, before pooling) of each layer at the input size.

    ``device='meta'`` builds the architecture without memory or weights (cheap);
    any other device builds it with the configured weights and runs one zero image.
    """
    s = resolve_spec(model_key, spec)
    layers = tuple(layers or s.layers)
    if device == "meta":
        return dict(meta_shapes(s, layers))
    prep = preprocessing(s)
    model = build_network(s, resolve_weights(s), prep.input_size, device=device)
    return _shapes(model, s, layers, prep.input_size, device)


# -------------------------------------------------------------------------- images


def load_image(path: str, prep: Preprocess) -> torch.Tensor:
    """Decodes an image to RGB and resizes it: a (3, size, size) uint8 tensor.

    Squashes to size x size (the paper), or with ``keep_aspect`` scales the shorter
    side to size and crops the centre.
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    except Exception as e:
        raise ImageDecodeError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e
    size, resample = prep.input_size, RESAMPLE[prep.interpolation]
    if prep.keep_aspect:
        w, h = rgb.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        rgb = rgb.resize((nw, nh), resample)
        left, top = (nw - size) // 2, (nh - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    elif rgb.size != (size, size):
        rgb = rgb.resize((size, size), resample)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class ImageFiles(torch.utils.data.Dataset):
    """(index, uint8 image tensor) for each path; decoding runs in the DataLoader workers."""

    def __init__(self, paths: list[str], prep: Preprocess):
        self.paths = [str(p) for p in paths]
        self.prep = prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return i, load_image(self.paths[i], self.prep)


def _worker_init(_):
    torch.set_num_threads(1)


def make_loader(paths, prep: Preprocess, *, batch_size: int, workers: int, pin: bool):
    return torch.utils.data.DataLoader(
        ImageFiles(paths, prep),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )


class Normalizer:
    """uint8 batch on the host -> normalised float batch on the device."""

    def __init__(self, prep: Preprocess, device: torch.device, channels_last: bool):
        self.device = device
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = channels_last

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).float()
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


# ---------------------------------------------------------------------- the model


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def precision(self) -> str:
        return str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "float32"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def resolve_runtime(device: str, precision: str) -> Runtime:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    cuda = dev.type == "cuda"
    if precision == "auto":
        dtype = (
            (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        )
    else:
        dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    # channels-last: faster convolutions with cuDNN and with oneDNN on the CPU alike
    return Runtime(dev, dtype, channels_last=dev.type in ("cuda", "cpu"))


def build_model(s: ModelSpec, weights: WeightsRef, prep: Preprocess, rt: Runtime):
    """The network with its weights, in eval mode, on the runtime's device."""
    model = build_network(s, weights, prep.input_size, device=rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ------------------------------------------------------------------------- extract


def _width(shape: tuple[int, ...], pooled: bool) -> int:
    """Row width of a layer output shape (C, H, W), (tokens, C) or (D,)."""
    if not pooled:
        return math.prod(shape)
    return int(shape[0] if len(shape) == 3 else shape[-1])


class Extractor:
    """A model with its taps: ``forward`` turns a uint8 image batch into descriptor rows.

    Rows are float32 tensors on the device, keyed by descriptor name, for the
    descriptors in ``names`` (default: all of the model entry's).
    """

    def __init__(self, model_key: str, spec: dict, names=None, *, device: str = "auto") -> None:
        s = resolve_spec(model_key, spec)
        self.spec, self.label = s, f"model {model_key!r}"
        descriptors = plan(s.key, s)
        names = [d.name for d in descriptors] if names is None else list(names)
        unknown = sorted(set(names) - {d.name for d in descriptors})
        if unknown:
            raise ValueError(
                f"{self.label}: unknown descriptors {unknown}; "
                f"it makes {[d.name for d in descriptors]}"
            )
        self.wanted = [d for d in descriptors if d.name in names]
        if not self.wanted:
            raise ValueError(f"{self.label}: no descriptor requested")
        self.prep = preprocessing(s)
        self.runtime = resolve_runtime(device, s.precision)
        weights = resolve_weights(s)
        self.model = build_model(s, weights, self.prep, self.runtime)
        if weights.path is None and weights.mode == "default":  # downloaded just now
            weights = resolve_weights(s)
        self.weights = weights
        if self.runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.layers = list(dict.fromkeys(d.layer for d in self.wanted))
        poolings = {
            layer: tuple(dict.fromkeys(d.pooling for d in self.wanted if d.layer == layer))
            for layer in self.layers
        }
        self.tapset = TapSet(
            self.model,
            {layer: resolve_tap(s, layer) for layer in self.layers},
            _make_reducer(poolings, self.label),
            label=self.label,
            aliases=_alias_names(s),
        )
        self.normalizer = Normalizer(self.prep, self.runtime.device, self.runtime.channels_last)
        self.validated = False

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, S, S) uint8 images -> {descriptor: (N, dim) float32 rows on the device}.

        Call under ``torch.inference_mode()``. The first call runs the whole network
        and checks the taps; later calls stop after the deepest tapped layer.
        """
        x = self.normalizer(batch)
        with self.runtime.autocast():
            values = self.tapset.run(self.model, x, validate=not self.validated)
        self.validated = True
        outs = {}
        for d in self.wanted:
            v = values[d.layer][d.pooling]
            outs[d.name] = torch.nn.functional.normalize(v, dim=1) if d.normalize == "l2" else v
        return outs

    def widths(self) -> dict[str, int]:
        shapes = meta_shapes(self.spec, tuple(self.layers))
        return {d.name: _width(shapes[d.layer], d.pooling is not None) for d in self.wanted}

    def attrs(self) -> dict[str, dict]:
        return _attrs(self.spec, self.weights, self.prep, self.runtime, self.wanted)

    def loader(self, image_paths, *, batch_size: int, workers: int):
        cuda = self.runtime.device.type == "cuda"
        return make_loader(image_paths, self.prep, batch_size=batch_size, workers=workers, pin=cuda)

    def close(self) -> None:
        self.tapset.remove()


def extract(
    model_key: str,
    spec: dict,
    image_paths: list[str],
    out_paths: dict[str, str],
    *,
    device: str = "auto",
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
    variant: str | None = None,
) -> None:
    """Extracts the descriptors named in ``out_paths`` in one forward pass per batch.

    ``out_paths`` maps descriptor names (a subset of ``descriptor_names``) to store
    paths; each store gets one float32 row per image, in ``image_paths`` order, and
    records ``variant`` (the image variant they are of) when given.
    Stores are published atomically when complete; on any error none is left behind.
    """
    ex = Extractor(model_key, spec, list(out_paths), device=device)
    paths = {d.name: str(out_paths[d.name]) for d in ex.wanted}
    attrs = {name: {**a, "variant": variant} for name, a in ex.attrs().items()}
    sink = store.MultiStoreWriter(paths, len(image_paths), attrs)
    try:
        from tqdm.auto import tqdm

        loader = ex.loader(image_paths, batch_size=batch_size, workers=workers)
        bar = tqdm(
            total=len(image_paths), unit="img", desc=ex.spec.key, file=sys.stderr,
            disable=not progress,
        )  # fmt: skip
        run = _cuda_batches if ex.runtime.device.type == "cuda" else _cpu_batches
        with bar:
            run(ex, _in_order(loader, ex.label), sink, bar)
        if not image_paths:
            sink.ensure(ex.widths())
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        ex.close()


def _in_order(loader, label: str):
    """The loader's (index, batch) pairs, checked to come in image order."""
    done = 0
    for index, batch in loader:
        if int(index[0]) != done:
            raise RuntimeError(f"{label}: batches out of order")
        done += len(index)
        yield index, batch


def _cuda_batches(ex: Extractor, batches, sink, bar) -> None:
    """GPU: each batch's rows copied back asynchronously, written once the next
    batch is queued."""
    pending: deque = deque()

    def emit(outs: dict[str, torch.Tensor], event) -> None:
        event.synchronize()
        sink.write({name: t.numpy() for name, t in outs.items()})

    with torch.inference_mode():
        for index, batch in batches:
            outs = {k: v.to("cpu", non_blocking=True) for k, v in ex.forward(batch).items()}
            event = torch.cuda.Event()
            event.record()
            pending.append((outs, event))
            while len(pending) > 1:
                emit(*pending.popleft())
            bar.update(len(index))
        while pending:
            emit(*pending.popleft())


def _cpu_batches(ex: Extractor, batches, sink, bar) -> None:
    """CPU: the job's threads (torch's count when called) each run whole batches
    on one torch thread; the rows are written in image order.

    torch's CPU convolutions reduce in another order on 2 threads than on 1
    (MobileNetV2 features of 8 images: 7,906 of 10,240 values moved, by up to
    3.6·10⁻⁵ relative), so the descriptors followed ``extract.threads``; a batch
    run on one thread has the same bits whichever thread runs it. Also faster on
    2 threads than one batch on both: 128 images in 1.05–1.09 s against
    1.30–1.35. At most ``threads`` + 1 batches are in flight."""
    threads = torch.get_num_threads()

    def forward(batch: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():  # (thread-local: set in the thread that runs)
            return {name: t.numpy() for name, t in ex.forward(batch).items()}

    def write(count: int, rows) -> None:
        sink.write(rows.result())
        bar.update(count)

    inflight: deque = deque()
    with _torch_threads(1), ThreadPoolExecutor(threads, thread_name_prefix="extract") as pool:
        for index, batch in batches:
            inflight.append((len(index), pool.submit(forward, batch)))
            while len(inflight) > threads:
                write(*inflight.popleft())
        while inflight:
            write(*inflight.popleft())


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads set to ``n``, then given back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _attrs(s: ModelSpec, weights: WeightsRef, prep: Preprocess, rt: Runtime, wanted) -> dict:
    sha = sha256_file(weights.path) if weights.path else None
    base = {
        "kind": "float",
        "model": s.key,
        "source": s.source,
        "arch": s.arch,
        "weights": weights.id,
        "weights_mode": weights.mode,
        "weights_tag": weights.tag,
        "weights_sha256": sha,
        "random_weights": weights.mode == "random",
        "input_size": prep.input_size,
        "keep_aspect": prep.keep_aspect,
        "interpolation": prep.interpolation,
        "mean": list(prep.mean),
        "std": list(prep.std),
        "precision": rt.precision,
        "device": rt.device.type,
        "versions": store.package_versions(
            "torch", "torchvision", "timm", "efficientnet-lite-pytorch", "pillow", "numpy"
        ),
    }
    return {
        d.name: {
            **base,
            "descriptor": d.name,
            "layer": d.layer,
            "module": d.tap.module,
            "module_call": d.tap.call,
            "layer_post": d.tap.post,
            "pooling": d.pooling,
            "normalize": d.normalize,
        }
        for d in wanted
    }
