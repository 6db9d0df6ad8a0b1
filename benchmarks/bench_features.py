"""CPU feature extraction against its floor: images/s, and whether the loader limits it.

Four rates on the same images, model and descriptors (rounds alternate; the best counts):

* floor: a bare ``model(batch)`` loop on pre-decoded, pre-normalised tensors (the whole
  network, as its own ``forward``; the batches are made before the clock starts) -- what
  the CPU can do at best with this model, batch size and thread count;
* forward: ``Extractor.forward`` on the same pre-decoded uint8 batches (normalisation,
  the taps, stopping after the deepest tapped layer, pooling, L2) -- extraction's compute
  without decoding;
* loader alone: the DataLoader workers decoding and resizing, no model;
* extract: ``features.extract`` end to end (decoding in the workers, stores written; it
  builds its model on every call: that setup is timed apart and reported), and again
  with decoding in the main process (``workers=0``), to show what the workers bring.

The loader is the limit when its rate alone is below the forward rate (then extract
cannot exceed it); extract / floor says what is left on the table. Use enough images
(``--repeat``) that the model setup and the first batch's kernel selection do not
dominate. ``--naive`` adds the
old one-job-per-descriptor baseline (batch 1, a model load and a full forward per
(layer, pooling)).

    python benchmarks/bench_features.py [--images DIR] [--repeat 2] [--rounds 3] [--threads 2]

The machine may be shared: rounds alternate the methods and the best round counts.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from risbench import features, models
from risbench.store import read_store

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden" / "images"


def baseline(key: str, spec: dict, paths: list[str]) -> dict[str, np.ndarray]:
    """One job per (layer, pooling): model load + one image and one forward at a time."""
    s = models.resolve_spec(key, spec)
    out = {}
    for d in features.plan(key, spec):
        if d.normalize != "none":
            continue  # made from the same job's rows below
        prep = models.preprocessing(s)
        model = models.build_network(s, models.resolve_weights(s), prep.input_size)
        tap = models.resolve_tap(s, d.layer)
        taken = {}
        module = model.get_submodule(tap.module)
        module.register_forward_hook(lambda m, a, o, taken=taken: taken.__setitem__("x", o))
        mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
        std = torch.tensor(prep.std).view(1, 3, 1, 1)
        rows = []
        with torch.inference_mode():
            for path in paths:
                x = (features.load_image(path, prep)[None].float() / 255 - mean) / std
                model(x)
                y = features._post(taken["x"], tap)
                if d.pooling == "avg":
                    y = y.mean(dim=(2, 3))
                elif d.pooling == "max":
                    y = y.amax(dim=(2, 3))
                rows.append(y.flatten(1).float().numpy())
        rows = np.concatenate(rows)
        out[d.name] = rows
        if "l2" in s.normalize:
            out[d.name + "_norm_l2"] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def predecoded(paths: list[str], prep, batch_size: int) -> list[torch.Tensor]:
    """The images decoded and resized once, in uint8 batches, before any clock starts."""
    images = [features.load_image(p, prep) for p in paths]
    return [torch.stack(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


FLOOR = "floor: bare model(batch), pre-decoded"
FORWARD = "forward: Extractor.forward, pre-decoded"
LOADER = "loader alone (decode + resize)"
EXTRACT = "extract end to end"
INPROC = "extract, decoding in-process (0 workers)"
NAIVE = "naive per-descriptor baseline (batch 1)"


class Rates:
    """The four measurements of one configuration, each a list of per-round seconds."""

    def __init__(self, key: str, spec: dict, paths: list[str], args, tmp: str):
        self.key, self.spec, self.paths, self.args, self.tmp = key, spec, paths, args, tmp
        self.ex = features.Extractor(key, spec, device="cpu")
        self.setup: list[float] = []  # model build, paid by every extract call
        s = self.ex.spec
        self.bare = features.build_model(  # no hooks: the plain network
            s, models.resolve_weights(s), self.ex.prep, self.ex.runtime
        )
        self.batches = predecoded(paths, self.ex.prep, args.batch_size)
        self.inputs = [self.ex.normalizer(b) for b in self.batches]  # floor: pre-normalised
        self.seconds: dict[str, list[float]] = {}
        with torch.inference_mode():  # warm up both (oneDNN picks its kernels per shape)
            self.ex.forward(self.batches[0])
            self.bare(self.inputs[0])

    def floor(self) -> None:
        with torch.inference_mode():
            for x in self.inputs:
                self.bare(x)

    def forward(self) -> None:
        with torch.inference_mode():
            for batch in self.batches:
                self.ex.forward(batch)

    def loader(self) -> None:
        for _ in self.ex.loader(
            self.paths, batch_size=self.args.batch_size, workers=self.args.workers
        ):
            pass

    def extract(self, r: int, workers: int) -> dict[str, str]:
        out = {n: f"{self.tmp}/{r}_{workers}_{n}.zarr" for n in self.ex.attrs()}
        features.extract(
            self.key, self.spec, self.paths, out, device="cpu",
            batch_size=self.args.batch_size, workers=workers, progress=False,
        )  # fmt: skip
        return out

    def round(self, r: int) -> dict[str, str]:
        for name, function in ((FLOOR, self.floor), (FORWARD, self.forward), (LOADER, self.loader)):
            self.seconds.setdefault(name, []).append(timed(function))
        self.setup.append(timed(lambda: features.Extractor(self.key, self.spec, device="cpu")))
        runs = [(EXTRACT, self.args.workers)] + [(INPROC, 0)] * (self.args.workers > 0)
        for name, workers in runs:
            start = time.perf_counter()
            out = self.extract(r, workers)
            self.seconds.setdefault(name, []).append(time.perf_counter() - start)
        return out


def report(rates: Rates, naive: list[float] | None) -> None:
    n = len(rates.paths)
    best = {name: n / min(t) for name, t in rates.seconds.items()}
    median = {name: n / statistics.median(t) for name, t in rates.seconds.items()}
    if naive:
        best[NAIVE] = n / min(naive)
        median[NAIVE] = n / statistics.median(naive)
    print(f"images/s, best of {len(next(iter(rates.seconds.values())))} rounds (median):")
    for name, rate in best.items():
        print(f"  {name:<42} {rate:8.1f}  ({median[name]:.1f})")
    floor, fwd, loader, end = (best[k] for k in (FLOOR, FORWARD, LOADER, EXTRACT))
    print(f"  extract / floor: {end / floor:.2f}; forward / floor: {fwd / floor:.2f}")
    limit = "the loader (decoding)" if loader < fwd else "the model (forward)"
    print(
        f"  limit: {limit}: loader alone {loader:.1f} images/s vs forward {fwd:.1f} "
        f"({loader / fwd:.1f}x); extract reaches {end / min(loader, fwd):.0%} of the slower stage"
    )
    setup = min(rates.setup)
    print(f"  extract includes {setup:.2f} s of model setup per call ({setup * end / n:.0%} here)")
    if INPROC in best and best[INPROC] > end:
        print(
            f"  on this machine ({os.cpu_count()} cores) {rates.args.workers} loader workers beside"
            f" {torch.get_num_threads()} torch threads cost more than they save: "
            f"{best[INPROC]:.1f} images/s with decoding in-process"
        )
    if naive:
        print(f"  extract / naive: {end / best[NAIVE]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images")
    ap.add_argument("--repeat", type=int, default=1, help="use the image list this many times")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--layers", default="features", help="comma-separated layers")
    ap.add_argument("--pooling", default="avg,max")
    ap.add_argument("--normalize", default="none,l2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--naive", action="store_true", help="also time the per-descriptor baseline")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    files = sorted(p for ext in ("png", "jpg", "jpeg") for p in glob.glob(f"{args.images}/*.{ext}"))
    if not files:
        raise SystemExit(f"no png/jpg images in {args.images}")
    paths = files * args.repeat
    spec = {
        "layers": args.layers.split(","),
        "pooling": args.pooling.split(","),
        "normalize": args.normalize.split(","),
    }
    names = features.descriptor_names(args.model, spec)
    print(
        f"{args.model}: {len(paths)} images, {len(names)} descriptors, batch {args.batch_size}, "
        f"{args.workers} loader workers, torch threads {args.threads}, cpu ({os.cpu_count()} cores)"
    )
    naive_seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        rates = Rates(args.model, spec, paths, args, tmp)
        for r in range(args.rounds):  # alternate, so all see the same machine load
            out = rates.round(r)
            if args.naive:
                start = time.perf_counter()
                naive = baseline(args.model, spec, paths)
                naive_seconds.append(time.perf_counter() - start)
        if args.naive:
            ours = {n: read_store(p)[0] for n, p in out.items()}
            diff = max(float(np.abs(ours[n] - naive[n]).max()) for n in names)
            print(f"max |difference| of rows, extract vs naive: {diff:.2e}")
    report(rates, naive_seconds)


if __name__ == "__main__":
    main()
