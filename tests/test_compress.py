"""Compact codes (risbench.compress) and their training split (risbench.split):
hand-computed cases, independent recomputations, config errors, the job."""

import copy
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.decomposition import PCA
from snakemake.utils import validate

from risbench import compress, encoders, figures, report, split, store
from risbench import config as risbench_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


# ------------------------------------------------------------------------------ names


def test_names_sizes_and_bytes():
    assert compress.parse_spec("itq-64") == ("itq", 64)
    assert compress.descriptor_name("mobilenet_v2_features_max", "itq-64") == (
        "mobilenet_v2_features_max__itq64"
    )
    assert compress.parse_name("a_b__pcaw128") == ("a_b", "pcaw", 128)
    assert compress.parse_name("mobilenet_v2_features_max") is None
    assert compress.parse_name("dhash") is None
    # PCA: float32 values; LSH, ITQ: bits / 8; PQ: its bytes
    assert compress.code_bytes("x__pca128") == 512
    assert compress.code_bytes("x__lsh64") == 8
    assert compress.code_bytes("x__itq32") == 4
    assert compress.code_bytes("x__pq16") == 16
    assert compress.code_bytes("dhash") is None
    assert encoders.pq_sub_quantizers(16, 8) == 16
    assert encoders.pq_sub_quantizers(16, 4) == 32


@pytest.mark.parametrize(
    "spec, message",
    [
        ("itq64", "not METHOD-SIZE"),
        ("sh-64", "unknown method 'sh'; methods: pca, pcaw, lsh, itq, pq"),
        ("lsh-60", "multiple of 8"),
        ("pca-0", "at least 1"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        compress.parse_spec(spec)


# ------------------------------------------------------------------------------ methods


def test_lsh_bits_of_a_hand_picked_vector_and_hyperplanes(monkeypatch):
    # Centred on the training mean (2, 0), x = (4, 1) is (2, 1); its dot
    # products with the 8 normals below are 2, 1, -2, 3, 1, -1, -3, -1.
    normals = np.array([[1, 0, -1, 1, 1, 0, -1, -1], [0, 1, 0, 1, -1, -1, -1, 1]], dtype=float)
    monkeypatch.setattr(encoders, "lsh_planes", lambda dim, bits, seed: normals)
    encode = encoders.fit_lsh(np.array([[1.0, 0.0], [3.0, 0.0]]), 8)
    code = encode(np.array([[4.0, 1.0]]))
    assert code.dtype == np.uint8 and code.shape == (1, 1)
    assert code[0, 0] == 0b11011000


def test_lsh_is_seeded_and_packs_every_bit():
    rng = np.random.default_rng(1)
    train, x = rng.standard_normal((50, 12)), rng.standard_normal((9, 12))
    first = encoders.fit("lsh", 64, train, seed=3)(x)
    assert first.shape == (9, 8)
    assert np.array_equal(first, encoders.fit("lsh", 64, train, seed=3)(x))
    assert not np.array_equal(first, encoders.fit("lsh", 64, train, seed=4)(x))
    # the bits, recomputed from the seeded planes
    planes = np.random.default_rng(3).standard_normal((12, 64))
    bits = (x - train.mean(axis=0)) @ planes > 0
    assert np.array_equal(np.unpackbits(first, axis=1), bits)


def test_pca_projects_a_2d_toy_set_onto_its_line():
    # points on the diagonal (t, t), t = -2..2, and two off it at (±0.1, ∓0.1):
    # mean 0, first component (1, 1)/√2; on it the 7 points sit at t√2 (and 0),
    # so its variance (n - 1 = 6) is (8 + 2 + 0 + 2 + 8) / 6 = 10/3.
    t = np.arange(-2, 3, dtype=float)
    train = np.concatenate([np.stack([t, t], axis=1), [[0.1, -0.1], [-0.1, 0.1]]])
    x = np.array([[3.0, 3.0], [1.0, -1.0]])
    plain = encoders.fit("pca", 1, train)(x)
    assert plain.shape == (2, 1) and plain.dtype == np.float32
    assert abs(plain[0, 0]) == pytest.approx(3 * math.sqrt(2), rel=1e-6)
    assert plain[1, 0] == pytest.approx(0, abs=1e-6)
    whitened = encoders.fit("pcaw", 1, train)(x)
    assert abs(whitened[0, 0]) == pytest.approx(3 * math.sqrt(2) / math.sqrt(10 / 3), rel=1e-6)


def test_itq_rotation_is_orthogonal_and_lowers_the_quantisation_loss():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    v -= v.mean(axis=0)
    rotation = encoders.itq_rotation(v, seed=5)
    assert np.allclose(rotation.T @ rotation, np.eye(16), atol=1e-10)

    def loss(r):
        projected = v @ r
        return float(((np.where(projected > 0, 1.0, -1.0) - projected) ** 2).sum())

    start, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((16, 16)))
    assert loss(rotation) < loss(start)
    assert np.allclose(encoders.itq_rotation(v, seed=5, iterations=0), start)


def test_itq_codes_are_the_signs_of_the_rotated_pca_projection():
    rng = np.random.default_rng(2)
    train, x = rng.standard_normal((80, 20)), rng.standard_normal((7, 20))
    codes = encoders.fit("itq", 8, train, seed=1)(x)
    assert codes.shape == (7, 1)
    pca = PCA(n_components=8, svd_solver="full").fit(train)
    rotation = encoders.itq_rotation(pca.transform(train), seed=1)
    assert np.array_equal(np.unpackbits(codes, axis=1), pca.transform(x) @ rotation > 0)


def test_pq_decodes_each_subvector_to_its_nearest_centroid():
    import faiss

    rng = np.random.default_rng(4)
    train, x = rng.standard_normal((400, 8)), rng.standard_normal((25, 8))
    pq = encoders.train_pq(train, 2, pq_nbits=4, seed=0)  # 2 bytes: 4 sub-quantisers
    assert (pq.M, pq.nbits, pq.dsub) == (4, 4, 2)
    decoded = encoders.fit("pq", 2, train, pq_nbits=4, seed=0)(x)
    assert decoded.shape == x.shape and decoded.dtype == np.float32
    centroids = faiss.vector_to_array(pq.centroids).reshape(4, 16, 2)
    for s in range(4):
        sub = x[:, 2 * s : 2 * s + 2]
        distances = ((sub[:, None, :] - centroids[s][None]) ** 2).sum(axis=2)
        nearest = centroids[s][distances.argmin(axis=1)]
        assert np.allclose(decoded[:, 2 * s : 2 * s + 2], nearest, atol=1e-5)
        # so the decoding error is the nearest-centroid error, never more
        error = ((decoded[:, 2 * s : 2 * s + 2] - sub) ** 2).sum(axis=1)
        assert np.all(error <= distances.min(axis=1) + 1e-5)


@pytest.mark.parametrize("spec", ["pca-6", "pcaw-6", "lsh-16", "itq-8", "pq-4"])
def test_kept_encoder_gives_the_fitted_encoders_codes_bit_for_bit(spec, tmp_path):
    method, size = compress.parse_spec(spec)
    rng = np.random.default_rng(7)
    train = rng.standard_normal((300, 16)).astype(np.float32)
    x = (rng.standard_normal((5000, 16)) * 3).astype(np.float32)  # more than one tile
    fitted = encoders.fit(method, size, train, seed=2, pq_nbits=4)
    path = tmp_path / "encoder.npz"
    fitted.save(path)
    kept = encoders.Encoder.load(path)
    codes = fitted.encode(x)
    assert np.array_equal(kept.encode(x), codes) and kept.encode(x).dtype == codes.dtype
    assert (kept.method, kept.size) == (method, size)
    # arrays only: the file opens without pickle
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(["meta", *encoders.ENCODER_ARRAYS[method]])
    assert codes.shape[1] == compress.store_dim(method, size, 16) // (
        8 if compress.METHODS[method].kind == "binary" else 1
    )


def test_kept_encoders_agree_with_the_libraries_they_were_fitted_with():
    import faiss

    rng = np.random.default_rng(8)
    train, x = rng.standard_normal((300, 16)), rng.standard_normal((40, 16))
    for whiten in (False, True):
        reference = PCA(6, whiten=whiten, svd_solver="full").fit(train).transform(x)
        kept = encoders.fit("pcaw" if whiten else "pca", 6, train)(x)
        assert np.allclose(kept, reference, atol=1e-5)
    # PQ rebuilt from its centroids: FAISS's own trained quantiser's codes, bit for bit
    pq = encoders.train_pq(train, 4, pq_nbits=4, seed=2)
    x32 = x.astype(np.float32)
    assert np.array_equal(
        encoders.fit("pq", 4, train, pq_nbits=4, seed=2)(x32), pq.decode(pq.compute_codes(x32))
    )
    assert faiss.vector_to_array(pq.centroids).size == 8 * 16 * 2


def test_encoder_file_errors_name_the_file(tmp_path):
    with pytest.raises(encoders.EncoderError, match="x.npz: no such encoder file"):
        encoders.Encoder.load(tmp_path / "x.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    with pytest.raises(encoders.EncoderError, match="bad.npz: not a risbench encoder file"):
        encoders.Encoder.load(bad)
    encoder = encoders.fit("lsh", 8, np.ones((4, 3)))
    np.savez(tmp_path / "v.npz", meta=np.array('{"format": "risbench encoder", '
             '"format_version": 99, "method": "lsh", "size": 8}'), **encoder.arrays)  # fmt: skip
    with pytest.raises(encoders.EncoderError, match="encoder format version 99, this risbench"):
        encoders.Encoder.load(tmp_path / "v.npz")
    with pytest.raises(ValueError, match="takes rows of 3 values, not 5"):
        encoder.encode(np.ones((2, 5)))


def test_pq_refuses_sub_quantisers_that_do_not_divide_the_dimensions():
    with pytest.raises(ValueError, match="4 sub-quantisers do not divide the 6 dimensions"):
        encoders.train_pq(np.zeros((300, 6)), 4, pq_nbits=8)


# ------------------------------------------------------------------------------ the split


def catalog(bases: int, distractors: int, variants=("original", "blur")) -> pd.DataFrame:
    rows = [
        {"variant": "original", "group": f"d{i}", "role": "distractor", "image_id": f"d{i}"}
        for i in range(distractors)
    ]
    for variant in variants:
        role = "base" if variant == "original" else "modified"
        rows += [
            {"variant": variant, "group": f"b{i}", "role": role, "image_id": f"b{i}"}
            for i in range(bases)
        ]
    frame = pd.DataFrame(rows)
    frame["path"] = frame["variant"] + "/" + frame["image_id"] + ".png"
    return frame


def test_split_is_seeded_stable_under_subsets_and_near_its_share():
    groups = [f"g{i}" for i in range(2000)]
    first = split.held_out_groups(groups, {"share": 0.25, "seed": 0})
    assert first == split.held_out_groups(groups, {"share": 0.25, "seed": 0})
    assert first != split.held_out_groups(groups, {"share": 0.25, "seed": 1})
    assert 0.22 < len(first) / len(groups) < 0.28
    # each group's fate is its own: a subset (screening's first N) keeps it
    assert split.held_out_groups(groups[:300], {"share": 0.25, "seed": 0}) == sorted(
        set(first) & set(groups[:300])
    )


def test_training_rows_and_benchmark_rows_never_overlap():
    images = catalog(bases=40, distractors=3)
    chosen = {"share": 0.3, "seed": 2, "distractors": True}
    train = split.training_mask(images, chosen)
    held = set(split.held_out_groups(images["group"][images["role"] == "base"], chosen))
    assert 0 < len(held) < 40
    matrices = {v: np.arange((images["variant"] == v).sum())[:, None] for v in ("original", "blur")}
    kept, kept_matrices = split.leave_out(images, matrices, chosen)
    indexed = kept[kept["role"] != "distractor"]
    assert not set(indexed["group"]) & held
    assert set(indexed["group"]) | held == {f"b{i}" for i in range(40)}
    # training: every variant of the held-out groups, and the distractors
    assert set(images.loc[train & (images["role"] != "distractor"), "group"]) == held
    assert train[images["role"] == "distractor"].all()
    assert (~train[~images["group"].isin(held) & (images["role"] != "distractor")]).all()
    # each kept matrix row is its variant's kept catalog row
    for variant, matrix in kept_matrices.items():
        rank = images[images["variant"] == variant].reset_index(drop=True)
        expected = rank.index[~(rank["group"].isin(held) & (rank["role"] != "distractor"))]
        assert np.array_equal(matrix[:, 0], expected)
    no_distractors = split.training_mask(images, {**chosen, "distractors": False})
    assert not no_distractors[images["role"] == "distractor"].any()
    assert split.leave_out(images, matrices, None)[0] is images


# ------------------------------------------------------------------------------ config


@pytest.fixture
def default():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["compress"] = {"mobilenet_v2_features_max": ["lsh-64", "pca-16"]}
    validate(config, SCHEMA, set_default=True)
    return config


def test_config_adds_compact_descriptors_and_their_pairs(default):
    risbench_config.check(default)
    table = risbench_config.descriptors(default)
    assert table["mobilenet_v2_features_max__lsh64"] == {
        "kind": "binary",
        "origin": "compress",
        "source": "mobilenet_v2_features_max",
    }
    pairs = risbench_config.pairs(default)
    assert ("mobilenet_v2_features_max__lsh64", "hamming") in pairs
    assert ("mobilenet_v2_features_max__pca16", "cosine") in pairs
    assert risbench_config.training_split(default) == {
        "share": 0.25,
        "seed": 0,
        "distractors": True,
    }
    del default["compress"]["mobilenet_v2_features_max"]
    assert risbench_config.training_split(default) is None


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"resnet_layer4_max": ["lsh-64"]}, "compress.resnet_layer4_max: not a float descriptor"),
        ({"dhash": ["pca-8"]}, "compress.dhash: not a float descriptor of this config"),
        ({"mobilenet_v2_features_max": ["lsh-64", "sh-8"]}, r"\[1\]: 'sh-8': unknown method"),
        ({"mobilenet_v2_features_max": ["itq-12"]}, r"\[0\]: 'itq-12'.*multiple of 8"),
        ({"mobilenet_v2_features_max": ["pca-128"]}, r"pca-128: needs 128 training vectors"),
        ({"mobilenet_v2_features_max": ["pq-16"]}, r"pq-16: needs 256 training vectors"),
        (
            {"mobilenet_v2_features_max": ["pq-3"], "pq_nbits": 5},
            "24 bits are not a multiple of pq_nbits 5",
        ),
    ],
)
def test_config_errors_name_the_key(default, entry, message):
    config = copy.deepcopy(default)
    config["compress"] = {**entry, "split": config["compress"]["split"], "pq_nbits": 8}
    config["compress"].update({k: v for k, v in entry.items() if k == "pq_nbits"})
    with pytest.raises(risbench_config.ConfigError, match=message):
        risbench_config.check(config)


def test_config_check_predicts_the_exact_training_count_of_the_demo(default):
    # The demo's bases: its 21 photos in name order after the 3 distractors; a
    # group is held out when the first 8 bytes of SHA-256(f"{seed}\0{id}") / 2**64 < share.
    import hashlib

    from risbench import sources

    ids = sorted(s.image_id for s in sources.demo_sources())[3:]
    fraction = [
        int.from_bytes(hashlib.sha256(f"0\0{i}".encode()).digest()[:8]) / 2**64 for i in ids
    ]
    held = sum(f < 0.25 for f in fraction)
    training = 3 + held * len(risbench_config.variants(default))
    config = copy.deepcopy(default)
    config["compress"]["mobilenet_v2_features_max"] = [f"pca-{training}"]
    risbench_config.check(config)
    config["compress"]["mobilenet_v2_features_max"] = [f"pca-{training + 1}"]
    message = f"holds out {held} of 18 base groups: .* = {training}"
    with pytest.raises(risbench_config.ConfigError, match=message):
        risbench_config.check(config)


def test_schema_rejects_a_share_of_one(default):
    config = copy.deepcopy(default)
    config["compress"]["split"]["share"] = 1
    with pytest.raises(Exception, match="share"):
        validate(config, SCHEMA, set_default=True)


# ------------------------------------------------------------------------------ the job


def test_compress_job_fits_on_the_training_rows_and_encodes_every_variant(tmp_path):
    images = catalog(bases=60, distractors=4)
    rng = np.random.default_rng(0)
    lists, stores, matrices = {}, {}, {}
    for variant, rows in images.groupby("variant", sort=False):
        lists[variant] = str(tmp_path / f"{variant}.parquet")
        rows.to_parquet(lists[variant], index=False)
        matrices[variant] = rng.standard_normal((len(rows), 16)).astype(np.float32)
        stores[variant] = str(tmp_path / "src" / f"{variant}.zarr")
        attrs = {"descriptor": "feat", "kind": "float", "dim": 16, "variant": variant}
        store.write_store(stores[variant], matrices[variant], attrs)
    methods = {"feat__lsh16": "lsh-16", "feat__pca4": "pca-4", "feat__pq4": "pq-4"}
    outputs = {n: {v: str(tmp_path / n / f"{v}.zarr") for v in lists} for n in methods}
    chosen = {"share": 0.5, "seed": 0, "distractors": True}
    spec = {"methods": methods, "split": chosen, "pq_nbits": 4}
    encoder_paths = {n: encoders.encoder_path(n, str(tmp_path)) for n in methods}
    compress.run("feat", lists, stores, outputs, spec, encoder_paths)

    full = pd.concat([images[images["variant"] == v] for v in lists])
    train = np.concatenate([matrices[v] for v in lists])[split.training_mask(full, chosen)]
    assert 0 < len(train) < len(full)
    for variant in lists:
        codes, attrs = store.read_store(outputs["feat__lsh16"][variant], variant=variant)
        assert (attrs["kind"], attrs["dim"], codes.shape) == (
            "binary",
            16,
            (len(matrices[variant]), 2),
        )
        assert attrs["training_vectors"] == len(train) and attrs["split"] == chosen
        assert np.array_equal(codes, encoders.fit_lsh(train, 16, seed=0)(matrices[variant]))
        pca, attrs = store.read_store(outputs["feat__pca4"][variant], descriptor="feat__pca4")
        assert attrs["kind"] == "float" and pca.shape == (len(matrices[variant]), 4)
        assert np.allclose(
            pca, PCA(4, svd_solver="full").fit(train).transform(matrices[variant]), atol=1e-4
        )
        decoded, attrs = store.read_store(outputs["feat__pq4"][variant], dim=16)
        assert attrs["code_bytes"] == 4 and attrs["pq_nbits"] == 4
        # the kept encoders encode the variant's rows to exactly the stored codes
        for name in methods:
            stored, attrs = store.read_store(outputs[name][variant])
            kept = encoders.Encoder.load(encoder_paths[name])
            assert np.array_equal(kept.encode(matrices[variant]), stored)
            digest = encoders.encoder_sha256(Path(encoder_paths[name]).read_bytes())
            assert attrs["encoder_sha256"] == digest
    meta = encoders.Encoder.load(encoder_paths["feat__pq4"]).meta
    assert (meta["descriptor"], meta["source"], meta["split"]) == ("feat__pq4", "feat", chosen)
    assert (meta["training_vectors"], meta["pq_nbits"], meta["dim"]) == (len(train), 4, 16)
    assert meta["source_attrs"]["dim"] == 16 and "variant" not in meta["source_attrs"]
    assert set(meta["versions"]) == {"numpy", "scikit-learn", "faiss-cpu"}


def test_compress_job_refuses_too_few_training_vectors(tmp_path):
    images = catalog(bases=6, distractors=1, variants=("original",))
    lists = {"original": str(tmp_path / "original.parquet")}
    images.to_parquet(lists["original"], index=False)
    stores = {"original": str(tmp_path / "src.zarr")}
    attrs = {"descriptor": "feat", "kind": "float", "dim": 8, "variant": "original"}
    store.write_store(stores["original"], np.ones((7, 8), dtype=np.float32), attrs)
    spec = {"methods": {"feat__pca8": "pca-8"}, "split": {"share": 0.3, "seed": 0}, "pq_nbits": 8}
    outputs = {"feat__pca8": {"original": str(tmp_path / "out.zarr")}}
    encoders = {"feat__pca8": str(tmp_path / "encoder.npz")}
    with pytest.raises(ValueError, match=r"feat__pca8 \(pca-8\) needs at least 8 training vectors"):
        compress.run("feat", lists, stores, outputs, spec, encoders)
    assert not Path(outputs["feat__pca8"]["original"]).exists()
    assert not Path(encoders["feat__pca8"]).exists()
    with pytest.raises(ValueError, match=r"no encoder file given for feat__pca8 \(--encoder"):
        compress.run("feat", lists, stores, outputs, spec, {})


# ------------------------------------------------------------------------------ bytes_f1


def test_pareto_front_of_a_hand_drawn_set():
    # (bytes, F1): (8, .9) front; (8, .8) beaten by it; (16, .9) beaten (larger, same F1);
    # (32, .95) front; (4, .5) front (smallest); (64, .95) beaten; (5120, .99) front
    size = [8, 8, 16, 32, 4, 64, 5120]
    f1 = [0.9, 0.8, 0.9, 0.95, 0.5, 0.95, 0.99]
    assert report.pareto_front(size, f1).tolist() == [True, False, False, True, True, False, True]


def results_rows() -> pd.DataFrame:
    rows = [
        ("all", "phash", "hamming", "binary", 64, 8, 0.91),
        ("all", "pdq", "hamming", "binary", 256, 32, 0.93),
        ("all", "feat", "cosine", "float", 1280, 5120, 0.99),
        ("all", "feat__itq64", "hamming", "binary", 64, 8, 0.95),
        ("all", "feat__pq16", "euclidean", "float", 1280, 5120, 0.97),
        ("all", "feat__pca32", "cosine", "float", 32, 128, 0.90),
        ("single-blur", "phash", "hamming", "binary", 64, 8, 1.0),
    ]
    columns = ["protocol", "descriptor", "distance", "kind", "dimensions", "bytes_per_image", "f1"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(queries=120, radius=0.1)


def test_bytes_f1_table_counts_code_bytes_and_marks_the_front():
    table = report.bytes_f1_table(results_rows())
    assert list(table.columns) == report.BYTES_F1_COLUMNS
    assert (table["descriptor"] + " " + table["distance"]).tolist() == [
        "feat__itq64 hamming",
        "phash hamming",
        "feat__pq16 euclidean",  # 16 code bytes, though its store holds 1280 floats
        "pdq hamming",
        "feat__pca32 cosine",
        "feat cosine",
    ]
    by_name = table.set_index("descriptor")
    assert by_name.loc["feat__pq16", "bytes_per_image"] == 16
    assert by_name["family"].to_dict() == {
        "feat__itq64": "compact",
        "phash": "hash",
        "pdq": "hash",
        "feat__pq16": "compact",
        "feat__pca32": "compact",
        "feat": "features",
    }
    # the front: itq64 (8 B, .95), pq16 (16 B, .97), feat (5120 B, .99)
    assert set(table.loc[table["pareto"], "descriptor"]) == {"feat__itq64", "feat__pq16", "feat"}


def test_bytes_f1_figure_draws_log_bytes_and_the_front():
    figure = figures.bytes_f1_figure(report.bytes_f1_table(results_rows()))
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["hash", "features", "compact", "Pareto front"]
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto front"][0]
    assert front.get_xdata().tolist() == [8, 16, 5120]
    assert [t.get_text() for t in ax.texts] == [
        "feat__itq64 (hamming)",
        "feat__pq16 (euclidean)",
        "feat (cosine)",
    ]
    plt.close(figure)
    # two descriptors at one point of the front: one name, the other counted
    rows = results_rows()
    rows = pd.concat([rows, rows.iloc[[2]].assign(descriptor="feat_norm_l2")])
    figure = figures.bytes_f1_figure(report.bytes_f1_table(rows))
    assert figure.axes[0].texts[-1].get_text() == "feat (cosine) +1 tied"
    plt.close(figure)


# ------------------------------------------------------------------------------ workflow


def test_workflow_plans_one_compress_job_and_benchmarks_every_code(tmp_path):
    from workflow_copy import copy_workflow, job_counts, load_test_config, snakemake

    config = load_test_config("compress")
    workdir = copy_workflow(tmp_path / "w", config)
    done = snakemake(workdir, "-n", "--printshellcmds")
    counts = job_counts(done.stdout)
    assert counts["compress_mobilenet_v2_features_avg"] == 1
    # dhash and pdq (hamming) and the tap (cosine, euclidean): 4 pairs; then lsh64
    # (hamming), pca4 and pq2 (cosine, euclidean): 5 more
    assert counts["benchmark"] == 9
    assert '"training_split": {"distractors": true, "seed": 0, "share": 0.5}' in done.stdout
    assert "--output mobilenet_v2_features_avg__pq2/rotate=" in done.stdout


def test_compress_timing_files_name_their_source_descriptor():
    job = report.parse_timing_path("results/timings/compress/mobilenet_v2_features_max.tsv")
    assert (job["stage"], job["descriptor"]) == ("compress", "mobilenet_v2_features_max")
    assert report.STAGES.index("compress") == report.STAGES.index("benchmark") - 1
    # a compact code's benchmark timing splits at its last "__"
    job = report.parse_timing_path("results/timings/benchmark/feat__itq64__hamming.tsv")
    assert (job["descriptor"], job["distance"]) == ("feat__itq64", "hamming")


def test_compress_command_refuses_an_output_without_its_variant():
    from risbench import cli

    with pytest.raises(SystemExit, match="expected NAME/VARIANT=PATH, got 'feat__lsh64=x.zarr'"):
        cli.main(["compress", "--source", "feat", "--spec", "{}", "--output", "feat__lsh64=x.zarr"])


def test_the_example_config_passes_the_checks():
    config = yaml.safe_load((ROOT / "config" / "compress.yaml").read_text())
    validate(config, SCHEMA, set_default=True)
    risbench_config.check(config)
    codes = risbench_config.compact_descriptors(config)
    assert len(codes) == 7 and "mobilenet_v2_features_max__itq64" in codes
    assert "pdq" in risbench_config.descriptors(config)


@pytest.mark.slow
def test_tiny_compress_run_end_to_end(tmp_path):
    """The tiny compress run: every code's stores are its kept encoder applied to
    the source store, every benchmark answers the same queries (the training
    groups left out), and bytes_f1 counts each code's bytes."""
    from workflow_copy import copy_workflow, load_test_config, snakemake

    workdir = copy_workflow(tmp_path / "w", load_test_config("compress"))
    snakemake(workdir)
    results = workdir / "results"
    source = "mobilenet_v2_features_avg"
    for variant in ("original", "blur", "rotate"):
        features, _ = store.read_store(results / "descriptors" / source / f"{variant}.zarr")
        for code in ("lsh64", "pca4", "pq2"):
            name = f"{source}__{code}"
            stored, attrs = store.read_store(results / "descriptors" / name / f"{variant}.zarr")
            kept = encoders.Encoder.load(encoders.encoder_path(name, str(results)))
            assert np.array_equal(kept.encode(features), stored)
            assert attrs["split"]["share"] == 0.5
    table = pd.read_csv(results / "tables" / "bytes_f1.csv")
    assert table["queries"].nunique() == 1  # every descriptor on the same queries
    size = dict(zip(table["descriptor"], table["bytes_per_image"], strict=False))
    assert (size[f"{source}__lsh64"], size[f"{source}__pca4"], size[f"{source}__pq2"]) == (8, 16, 2)
    assert size["pdq"] == 32 and size[source] == 4 * 1280
