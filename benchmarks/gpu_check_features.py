"""One-command GPU check of feature extraction: images/s and the bottleneck.

Writes N synthetic JPEG photos (smooth colour fields with texture and noise,
500x375 like MIRFLICKR) to a temporary folder, then for each model measures

  1. loader alone: DataLoader workers decoding + resizing, batches copied to the device;
  2. model alone:  the same uint8 batch already on the device, normalised and run
                   through the tapped network (AMP and channels-last on CUDA);
  3. both:         ``risbench.features.extract`` end to end, writing the stores;

and says which of decoding or the model limits the end-to-end rate. Weights are
the library defaults when they are cached, otherwise random (flagged in the
output; speed does not depend on the weights' values).

    python benchmarks/gpu_check_features.py                 # CUDA, 2000 images
    python benchmarks/gpu_check_features.py --device cpu --n 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool

import numpy as np
import torch
from PIL import Image

from risbench import features, models

MODELS = {
    "resnet50": ["activation_22", "activation_40", "activation_46", "avg_pool", "predictions"],
    "vgg16": ["block4_pool", "block5_pool", "fc2"],
    "mobilenet_v2": ["features"],  # the offline default: the --smoke run's model
}


def _write_jpeg(args: tuple[str, int, int, int]) -> None:
    path, seed, w, h = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.3)]
        img[..., c] = 128 + 90 * np.sin(fx * xx + phase) * np.cos(fy * yy + phase / 2)
    img += rng.normal(0, 12, (h, w, 1))  # shared texture, like real photo grain
    img = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)


def write_images(folder: str, n: int, size=(500, 375), procs: int | None = None) -> list[str]:
    paths = [os.path.join(folder, f"img_{i:06d}.jpg") for i in range(n)]
    jobs = [(p, i, size[0], size[1]) for i, p in enumerate(paths)]
    with Pool(procs or min(16, os.cpu_count() or 1)) as pool:
        pool.map(_write_jpeg, jobs, chunksize=16)
    return paths


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_weights(key: str) -> str:
    """The model entry's own weights ("default", "offline", ...) when they can be had
    offline, else "random"."""
    try:
        features.check_weights(key, {})
        return models.resolve_spec(key, {}).weights
    except models.WeightsUnavailable:
        return "random"


def check_model(key: str, layers, paths, args, tmp: str) -> dict:
    weights = args.weights if args.weights != "auto" else pick_weights(key)
    spec = {"layers": layers, "weights": weights, "pooling": ["avg", "max"]}
    spec["normalize"] = ["none", "l2"]
    names = features.descriptor_names(key, spec)
    t0 = time.perf_counter()
    ex = features.Extractor(key, spec, names, device=args.device)
    setup = time.perf_counter() - t0
    dev, bs, n = ex.runtime.device, args.batch_size, len(paths)
    res = {
        "model": key,
        "weights": weights,
        "random_weights": weights == "random",
        "descriptors": len(names),
        "input_size": ex.prep.input_size,
        "precision": ex.runtime.precision,
        "channels_last": ex.runtime.channels_last,
        "batch_size": bs,
        "workers": args.workers,
        "images": n,
        "first_setup_s": setup,
    }

    # 1. loader alone (decode + resize in workers, pinned copy to the device)
    t0 = time.perf_counter()
    seen = 0
    for _, batch in ex.loader(paths, batch_size=bs, workers=args.workers):
        batch.to(dev, non_blocking=True)
        seen += len(batch)
    _sync(dev)
    res["loader_img_s"] = seen / (time.perf_counter() - t0)

    # 2. model alone on one resident batch
    size = ex.prep.input_size
    batch = torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, device=dev)
    with torch.inference_mode():
        for _ in range(args.warmup):  # first call validates the taps; cudnn autotunes
            ex.forward(batch)
        _sync(dev)
        iters = max(1, -(-n // bs))
        t0 = time.perf_counter()
        for _ in range(iters):
            outs = ex.forward(batch)
        _sync(dev)
        res["model_img_s"] = iters * bs / (time.perf_counter() - t0)
    res["dims"] = {k: int(v.shape[1]) for k, v in outs.items()}
    ex.close()
    del ex
    if dev.type == "cuda":
        res["gpu_mem_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        torch.cuda.empty_cache()

    # 3. both: extract end to end, stores written. extract builds its model again: time
    # that build now (weights cached, CUDA up), as the setup to take off its total
    t0 = time.perf_counter()
    features.Extractor(key, spec, names, device=args.device).close()
    setup = res["setup_s"] = time.perf_counter() - t0
    out = {name: os.path.join(tmp, f"{name}.zarr") for name in names}
    t0 = time.perf_counter()
    features.extract(
        key, spec, paths, out, device=args.device,
        batch_size=bs, workers=args.workers, progress=False,
    )  # fmt: skip
    total = time.perf_counter() - t0
    res["end_to_end_img_s"] = n / total
    res["end_to_end_after_setup_img_s"] = n / max(total - setup, total / 100)

    loader, model = res["loader_img_s"], res["model_img_s"]
    both = res["end_to_end_after_setup_img_s"]
    res["bottleneck"] = "decoding (DataLoader)" if loader < model else "model (device)"
    res["end_to_end_vs_bound"] = both / min(loader, model)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda | cpu | auto")
    ap.add_argument("--n", type=int, default=2000, help="synthetic JPEG images")
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--weights", default="auto", help="auto (default if cached, else random)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible; use --device cpu", file=sys.stderr)
        return 2
    args.batch_size = max(1, min(args.batch_size, args.n))

    info = {"torch": torch.__version__, "device": args.device, "cpus": os.cpu_count()}
    if torch.cuda.is_available() and args.device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported()
    print(json.dumps(info))

    results = []
    with tempfile.TemporaryDirectory(prefix="risbench-gpu-check-") as tmp:
        t0 = time.perf_counter()
        paths = write_images(tmp, args.n)
        print(f"wrote {args.n} synthetic 500x375 JPEGs in {time.perf_counter() - t0:.1f} s")
        for key in args.models.split(","):
            with tempfile.TemporaryDirectory(dir=tmp) as stores:
                res = check_model(key, MODELS.get(key, ["predictions"]), paths, args, stores)
            results.append(res)
            flag = "  [RANDOM WEIGHTS: speed only]" if res["random_weights"] else ""
            print(
                f"{key:>9} @{res['input_size']} {res['precision']:>8} bs {res['batch_size']}, "
                f"{res['workers']} workers, {res['descriptors']} descriptors{flag}\n"
                f"          loader alone {res['loader_img_s']:8.1f} img/s | "
                f"model alone {res['model_img_s']:8.1f} img/s | "
                f"end to end {res['end_to_end_img_s']:8.1f} img/s "
                f"({res['end_to_end_after_setup_img_s']:.1f} after {res['setup_s']:.1f} s setup)\n"
                f"          bottleneck: {res['bottleneck']}; end to end (after setup) reaches "
                f"{100 * res['end_to_end_vs_bound']:.0f}% of the slower stage",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
