"""Fitted encoders of the compact descriptors (:mod:`risbench.compress`): the
fit of each method and the one owner of the encoder file.

A fit gives an :class:`Encoder` (plain arrays: PCA's mean, components and
variances; LSH's mean and hyperplanes; ITQ's PCA arrays and rotation; PQ's
centroids). The compress job keeps it in ``results/descriptors/{name}/encoder.npz``
(:func:`encoder_path`, no pickle) and encodes through it; ``risbench index``
rebuilds it from that file (:mod:`risbench.imageindex`) and gets the same codes
bit for bit. The top level is cheap; NumPy, scikit-learn and FAISS are imported
when an encoder fits or encodes.
"""

from __future__ import annotations

from dataclasses import dataclass

ITQ_ITERATIONS = 50


def pq_sub_quantizers(size: int, pq_nbits: int) -> int:
    """Sub-quantisers of a ``pq-size`` code: size bytes of pq_nbits-bit codes."""
    if (8 * size) % pq_nbits:
        raise ValueError(f"pq-{size}: {8 * size} bits are not a multiple of pq_nbits {pq_nbits}")
    return 8 * size // pq_nbits


# --------------------------------------------------------------------------------------
# encoders: fitted once, kept as plain arrays (an Encoder), encoded by this module alone

ENCODER_FORMAT = "risbench encoder"
ENCODER_FORMAT_VERSION = 1
ENCODER_FILE = "encoder.npz"
# Rows encoded at a time: the float64 copy of a tile is ENCODE_TILE × d × 8 bytes
# (1280-d features: 42 MB), whatever the matrix.
ENCODE_TILE = 4096
# The arrays each method keeps (the file holds exactly these, plus `meta`).
ENCODER_ARRAYS = {
    "pca": ("mean", "components", "explained_variance"),
    "pcaw": ("mean", "components", "explained_variance"),
    "lsh": ("mean", "planes"),
    "itq": ("mean", "components", "explained_variance", "rotation"),
    "pq": ("centroids",),
}


class EncoderError(ValueError):
    """An encoder file that cannot be used; the message names the file and why."""


def encoder_path(name: str, results_dir: str = "results") -> str:
    """Where the compress job keeps the encoder of compact descriptor ``name``
    (beside its stores ``{results}/descriptors/{name}/{variant}.zarr``)."""
    return f"{results_dir}/descriptors/{name}/{ENCODER_FILE}"


@dataclass
class Encoder:
    """A fitted encoder as plain arrays (float64, except PQ's float32 centroids)
    and ``meta`` (method, size, ... and, once the job adds them, the descriptor,
    source, split and versions). ``encode`` (or calling it) maps a float matrix
    to the compact codes; it is the one encoding of the job and of the index."""

    method: str
    size: int
    arrays: dict
    meta: dict

    def __call__(self, x):
        return self.encode(x)

    def encode(self, x):
        """Codes of the rows of ``x`` (n × source dim), a tile of rows at a time."""
        import numpy as np

        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.source_dim:
            raise ValueError(
                f"{self.meta.get('descriptor', self.method)}: the encoder takes rows of "
                f"{self.source_dim} values, not {x.shape[1] if x.ndim == 2 else x.shape}"
            )
        tiles = [self._encode_tile(x[a : a + ENCODE_TILE]) for a in range(0, len(x), ENCODE_TILE)]
        return np.concatenate(tiles) if tiles else self._encode_tile(x[:0])

    @property
    def source_dim(self) -> int:
        if self.method == "pq":  # M sub-quantisers × 2^nbits centroids × d/M values
            m, _, dsub = self.arrays["centroids"].shape
            return int(m * dsub)
        return int(self.arrays["mean"].size)

    @property
    def nbits(self) -> int:
        """PQ: bits a sub-quantiser code (2^nbits centroids each)."""
        return int(self.arrays["centroids"].shape[1]).bit_length() - 1

    def _encode_tile(self, x):
        import numpy as np

        if self.method == "pq":
            x = np.ascontiguousarray(x, dtype=np.float32)
            pq = self._pq()
            return pq.decode(pq.compute_codes(x))
        centred = np.asarray(x, dtype=np.float64) - self.arrays["mean"]
        if self.method == "lsh":
            return pack_signs(centred @ self.arrays["planes"])
        projected = centred @ self.arrays["components"].T
        if self.method == "itq":
            return pack_signs(projected @ self.arrays["rotation"])
        if self.method == "pcaw":
            projected /= whitening_scale(self.arrays["explained_variance"])
        return projected.astype(np.float32)

    def _pq(self):
        """FAISS's ProductQuantizer rebuilt from the centroids (built once)."""
        if getattr(self, "_faiss_pq", None) is None:
            import faiss

            d, nbits = self.source_dim, self.nbits
            pq = faiss.ProductQuantizer(d, pq_sub_quantizers(self.size, nbits), nbits)
            faiss.copy_array_to_vector(self.arrays["centroids"].ravel(), pq.centroids)
            self._faiss_pq = pq
        return self._faiss_pq

    # -- the file: an .npz of plain arrays (read without pickle) and a JSON `meta`
    def save(self, path) -> None:
        """Writes the encoder file atomically (:func:`risbench.files.write_atomic`)."""
        import json
        from pathlib import Path

        import numpy as np

        from risbench import files

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": ENCODER_FORMAT,
            "format_version": ENCODER_FORMAT_VERSION,
            **self.meta,
            "method": self.method,
            "size": self.size,
        }
        meta = np.array(json.dumps(meta, sort_keys=True))
        files.write_atomic(path, lambda out: np.savez(out, meta=meta, **self.arrays))

    @classmethod
    def load(cls, path) -> Encoder:
        """Reads an encoder file; :class:`EncoderError` naming the file and why."""
        return read_file(path)[1]

    @classmethod
    def from_bytes(cls, data: bytes, path="encoder") -> Encoder:
        import io
        import json

        import numpy as np

        from risbench import files

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                arrays = {key: npz[key] for key in npz.files if key != "meta"}
        except Exception as error:  # zip, npy or JSON errors all mean: not an encoder file
            raise EncoderError(f"{path}: not a risbench encoder file ({error})") from None
        advice = "rerun the compress stage"
        files.check_format(
            meta, ENCODER_FORMAT, ENCODER_FORMAT_VERSION, path=path, kind="encoder",
            advice=advice, error=EncoderError,
        )  # fmt: skip
        method, size = meta["method"], int(meta["size"])
        if method not in ENCODER_ARRAYS or set(arrays) != set(ENCODER_ARRAYS[method]):
            raise EncoderError(f"{path}: {method} encoder with arrays {sorted(arrays)}")
        return cls(method, size, arrays, meta)


def read_file(path) -> tuple[bytes, Encoder]:
    """An encoder file's bytes (what its SHA-256 identifies) and its
    :class:`Encoder`; :class:`EncoderError` naming the file and why."""
    from pathlib import Path

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EncoderError(f"{path}: no such encoder file") from None
    return data, Encoder.from_bytes(data, path)


def encoder_sha256(data: bytes) -> str:
    """The identity of an encoder file: the SHA-256 of its bytes."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# fitting: each fit returns an Encoder


def whitening_scale(explained_variance):
    """√variance per component, floored at float eps as scikit-learn's PCA does."""
    import numpy as np

    scale = np.sqrt(explained_variance)
    return np.maximum(scale, np.finfo(scale.dtype).eps)


def pca_arrays(train, k: int, *, whiten: bool = False, seed: int = 0) -> dict:
    """scikit-learn's PCA fit, kept as float64 arrays (mean, components k × d,
    explained variance)."""
    import numpy as np
    from sklearn.decomposition import PCA

    pca = PCA(n_components=k, whiten=whiten, svd_solver="full", random_state=seed).fit(train)
    return {
        "mean": pca.mean_.astype(np.float64),
        "components": pca.components_.astype(np.float64),
        "explained_variance": pca.explained_variance_.astype(np.float64),
    }


def fit_pca(train, k: int, *, whiten: bool = False, seed: int = 0) -> Encoder:
    method = "pcaw" if whiten else "pca"
    return Encoder(method, k, pca_arrays(train, k, whiten=whiten, seed=seed), {"seed": seed})


def pack_signs(projected):
    """One bit per column, 1 where the value is > 0, packed 8 a byte."""
    import numpy as np

    return np.packbits(np.asarray(projected) > 0, axis=1)


def lsh_planes(dim: int, bits: int, seed: int):
    """``bits`` Gaussian hyperplane normals (columns), seeded."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((dim, bits))


def fit_lsh(train, bits: int, *, seed: int = 0) -> Encoder:
    import numpy as np

    mean = np.asarray(train, dtype=np.float64).mean(axis=0)
    planes = np.asarray(lsh_planes(mean.size, bits, seed), dtype=np.float64)
    return Encoder("lsh", bits, {"mean": mean, "planes": planes}, {"seed": seed})


def itq_rotation(v, *, seed: int = 0, iterations: int = ITQ_ITERATIONS):
    """ITQ's rotation R of centred, PCA-projected data ``v`` (n × b): from a
    seeded random orthogonal matrix, alternate B = sign(vR) and the
    orthogonal Procrustes solution R = U Wᵀ of vᵀB = U S Wᵀ."""
    import numpy as np

    b = v.shape[1]
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((b, b)))
    for _ in range(iterations):
        codes = np.where(v @ rotation > 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ codes)
        rotation = u @ wt
    return rotation


def fit_itq(train, bits: int, *, seed: int = 0) -> Encoder:
    import numpy as np

    arrays = pca_arrays(train, bits, seed=seed)
    # the rotation is fitted on the projection the encoder computes
    v = (np.asarray(train, dtype=np.float64) - arrays["mean"]) @ arrays["components"].T
    arrays["rotation"] = itq_rotation(v, seed=seed)
    return Encoder("itq", bits, arrays, {"seed": seed})


def train_pq(train, size: int, *, pq_nbits: int = 8, seed: int = 0):
    """FAISS's ProductQuantizer of ``size``-byte codes, trained (seeded k-means)."""
    import faiss
    import numpy as np

    train = np.ascontiguousarray(train, dtype=np.float32)
    m = pq_sub_quantizers(size, pq_nbits)
    if train.shape[1] % m:
        raise ValueError(
            f"pq-{size}: {m} sub-quantisers do not divide the {train.shape[1]} dimensions"
        )
    pq = faiss.ProductQuantizer(train.shape[1], m, pq_nbits)
    pq.cp.seed = seed
    pq.train(train)
    return pq


def fit_pq(train, size: int, *, pq_nbits: int = 8, seed: int = 0) -> Encoder:
    """Encodes to PQ codes decoded to floats (each sub-vector its centroid); keeps
    the centroids (M × 2^nbits × d/M, float32)."""
    import faiss

    pq = train_pq(train, size, pq_nbits=pq_nbits, seed=seed)
    centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    meta = {"seed": seed, "pq_nbits": pq_nbits, "pq_m": pq.M}
    return Encoder("pq", size, {"centroids": centroids}, meta)


def fit(method: str, size: int, train, *, seed: int = 0, pq_nbits: int = 8) -> Encoder:
    """The encoder of ``method-size`` fitted on ``train`` (n × d float)."""
    if method in ("pca", "pcaw"):
        return fit_pca(train, size, whiten=method == "pcaw", seed=seed)
    if method == "lsh":
        return fit_lsh(train, size, seed=seed)
    if method == "itq":
        return fit_itq(train, size, seed=seed)
    if method == "pq":
        return fit_pq(train, size, pq_nbits=pq_nbits, seed=seed)
    raise ValueError(f"unknown method {method!r}; methods: {', '.join(ENCODER_ARRAYS)}")
