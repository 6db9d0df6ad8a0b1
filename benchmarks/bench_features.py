"""Images/s of one-pass batched ``extract`` vs a naive per-descriptor baseline (CPU).

The baseline is what a one-job-per-descriptor design does: for each configured
(layer, pooling) it loads the model and then, image by image, decodes, resizes
and runs a full forward pass to take that one layer (L2 normalisation is done in
the same job). ``extract`` decodes each image once in DataLoader workers and
takes every descriptor from one batched forward pass that stops after the
deepest tapped layer.

    python benchmarks/bench_features.py [--images DIR] [--repeat 2] [--rounds 3] [--threads 2]

The machine may be shared: rounds alternate the two methods and the best round counts.
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
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    files = sorted(p for ext in ("png", "jpg", "jpeg") for p in glob.glob(f"{args.images}/*.{ext}"))
    paths = files * args.repeat
    spec = {
        "layers": args.layers.split(","),
        "pooling": args.pooling.split(","),
        "normalize": args.normalize.split(","),
    }
    names = features.descriptor_names(args.model, spec)
    jobs = len({(d.layer, d.pooling) for d in features.plan(args.model, spec)})
    print(
        f"{args.model}: {len(paths)} images, {len(names)} descriptors ({jobs} layer/pooling jobs),"
        f" torch threads {args.threads}, cpu"
    )

    t_one, t_naive = [], []
    with tempfile.TemporaryDirectory() as tmp:
        warm = {n: f"{tmp}/warm_{n}.zarr" for n in names}
        features.extract(args.model, spec, paths[:2], warm, device="cpu", workers=0, progress=False)
        for r in range(args.rounds):  # alternate, so both see the same machine load
            out = {n: f"{tmp}/{r}_{n}.zarr" for n in names}
            t0 = time.perf_counter()
            features.extract(
                args.model, spec, paths, out, device="cpu",
                batch_size=args.batch_size, workers=args.workers, progress=False,
            )  # fmt: skip
            t_one.append(time.perf_counter() - t0)
            ours = {n: read_store(p)[0] for n, p in out.items()}

            t0 = time.perf_counter()
            naive = baseline(args.model, spec, paths)
            t_naive.append(time.perf_counter() - t0)

    diff = max(float(np.abs(ours[n] - naive[n]).max()) for n in names)
    n = len(paths)
    one, base = n / min(t_one), n / min(t_naive)
    med_one, med_base = n / statistics.median(t_one), n / statistics.median(t_naive)
    print(f"best of {args.rounds} rounds (median in brackets):")
    print(
        f"  one-pass extract (batch {args.batch_size}, {args.workers} workers): "
        f"{one:7.1f} images/s  ({med_one:.1f})"
    )
    print(
        f"  naive per-descriptor baseline (batch 1, {jobs} jobs):  "
        f"{base:7.1f} images/s  ({med_base:.1f})"
    )
    print(f"  speed-up: {one / base:.2f}x  ({med_one / med_base:.2f}x)")
    print(f"  max |difference| of rows between the two: {diff:.2e}")


if __name__ == "__main__":
    main()
