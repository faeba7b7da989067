""" "None of the above": how unlike a model's own classes a picture is, learned at publish time without any
negative class. Pure numpy; no TensorFlow.

Two kinds, stored next to the head as `ood.npz` in the artifact:

- `centroid` (heads on a frozen backbone, whose features the serving path has anyway): per-class centroids of
  the L2-normalised training features and each class's typical spread; a picture's distance is its smallest
  distance to a centroid in units of that class's spread.
- `max_probability` (whole models, which serving sees only as probabilities): the distance is 1 - the best
  class probability.

Either way the validation pictures' distances (known kinds the model never fitted) are kept, sorted; for
centroids also the training pictures' leave-one-out distances (their own class's centroid computed without
them), so a small dataset's handful of validation pictures still gives a usable threshold. A picture's
`known_share` is the share of those validation pictures at least as far from the classes as it is; the answer
is "none of the above" when the share is below a threshold (default 1 %: the 99th percentile of known pictures'
distances). The threshold is a per-model option, so it means the same for every kind and every version.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pipelines.errors import InvalidInput

DEFAULT_NONE_BELOW = 0.01  # flag pictures farther than 99 % of the known validation pictures
MAX_KEPT = 2000  # validation distances kept (as quantiles when there are more)
EPS = 1e-6


@dataclass(frozen=True)
class OodModel:
    kind: str  # "centroid" | "max_probability"
    val_distances: np.ndarray  # sorted ascending
    centroids: np.ndarray | None = None  # (classes, features), L2-normalised space
    scales: np.ndarray | None = None  # (classes,)

    def distances(self, *, features: np.ndarray | None = None, probabilities: np.ndarray | None = None) -> np.ndarray:
        """How far each picture is from the model's classes (larger: less like any of them)."""
        if self.kind == "centroid":
            if features is None:
                raise InvalidInput("A centroid out-of-distribution model needs the pictures' features.")
            return _centroid_distances(np.asarray(features, dtype=np.float32), self.centroids, self.scales)
        if probabilities is None:
            raise InvalidInput("A max-probability out-of-distribution model needs the class probabilities.")
        return 1.0 - np.asarray(probabilities, dtype=np.float64).max(axis=1)

    def known_share(self, distances: np.ndarray) -> np.ndarray:
        """Per picture: the share of known validation pictures at least as far from the classes (1 = typical)."""
        kept = self.val_distances
        if len(kept) == 0:
            return np.ones(len(distances))
        farther = len(kept) - np.searchsorted(kept, np.asarray(distances, dtype=np.float64), side="left")
        return farther / len(kept)

    def to_bytes(self) -> bytes:
        arrays = {"kind": np.array(self.kind), "val_distances": self.val_distances}
        if self.centroids is not None:
            arrays |= {"centroids": self.centroids, "scales": self.scales}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> OodModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            kind = str(arrays["kind"])
            centroids = arrays["centroids"] if "centroids" in arrays else None
            scales = arrays["scales"] if "scales" in arrays else None
            return cls(kind, arrays["val_distances"], centroids, scales)


def _normalised(features: np.ndarray) -> np.ndarray:
    features = features.reshape(features.shape[0], int(np.prod(features.shape[1:]))).astype(np.float32)
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + EPS)


def _centroid_distances(features: np.ndarray, centroids: np.ndarray, scales: np.ndarray) -> np.ndarray:
    x = _normalised(features)
    squared = (x * x).sum(1)[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return (np.sqrt(np.maximum(squared, 0.0)) / scales[None, :]).min(axis=1).astype(np.float64)


def _kept(distances: np.ndarray) -> np.ndarray:
    distances = np.sort(np.asarray(distances, dtype=np.float64))
    if len(distances) > MAX_KEPT:
        distances = np.quantile(distances, np.linspace(0, 1, MAX_KEPT))
    return distances


def fit_centroids(
    train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray, num_classes: int
) -> OodModel:
    """Centroids and spreads from the training pictures' features; distances kept from the validation ones."""
    x = _normalised(np.asarray(train_features))
    labels = np.asarray(train_labels)
    centroids = np.zeros((num_classes, x.shape[1]), dtype=np.float32)
    scales = np.ones(num_classes, dtype=np.float32)
    for c in range(num_classes):
        rows = x[labels == c]
        if len(rows) == 0:
            centroids[c] = np.inf  # a class without pictures is never the nearest
            continue
        centroids[c] = rows.mean(0)
        scales[c] = max(float(np.linalg.norm(rows - centroids[c], axis=1).mean()), EPS)
    centroids = np.where(np.isfinite(centroids), centroids, 1e6).astype(np.float32)
    model = OodModel("centroid", np.zeros(0), centroids, scales)
    known = [model.distances(features=np.asarray(val_features)), _left_out_distances(x, labels, centroids, scales)]
    return OodModel("centroid", _kept(np.concatenate(known)), centroids, scales)


def _left_out_distances(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Each training picture's distance as if its class centroid had been computed without it: as unbiased as
    a validation picture's, so a validation split of a handful of pictures (small datasets) still gives a
    usable threshold. Leaving x out moves its own centroid to (n mu - x) / (n - 1), so x - mu' = n / (n - 1)
    (x - mu); the other classes' centroids do not change."""
    if len(x) == 0:
        return np.zeros(0)
    squared = (x * x).sum(1)[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    scaled = np.sqrt(np.maximum(squared, 0.0)) / scales[None, :]
    counts = np.bincount(labels, minlength=len(centroids))
    rows = np.arange(len(x))
    own = counts[labels]
    keep = own > 1
    scaled[rows[keep], labels[keep]] *= own[keep] / (own[keep] - 1)
    return scaled[keep].min(axis=1).astype(np.float64)


def fit_max_probability(val_probabilities: np.ndarray) -> OodModel:
    """For whole models: distances (1 - best probability) of the validation pictures."""
    return OodModel("max_probability", _kept(1.0 - np.asarray(val_probabilities, dtype=np.float64).max(axis=1)))


def none_of_the_above(known_share: float, none_below: float) -> tuple[bool, str | None]:
    """The flag and its reason in words for one picture."""
    if none_below <= 0 or known_share >= none_below:
        return False, None
    return True, (
        f"The picture looks unlike every class this model knows: only {known_share:.1%} of the model's own "
        f"validation pictures were as far from their classes (it flags below {none_below:.1%})."
    )
