"""The feature cache: chunks on a real local blob store; features computed once and then read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cluster import feature_cache
from cluster.blobs import LocalBlobStore
from cluster.feature_cache import FeatureCache, cached_features, feature_key
from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.features import FeatureExtractor
from pipelines.images import PreprocessingPolicy

POLICY = PreprocessingPolicy(24, "rgb", "stretch")
SPEC = CandidateSpec(kind="frozen_head", color="rgb", input_size=32, backbone="efficientnet_lite0")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backbones")


def pictures(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 24, 24, 3), dtype=np.uint8)


def test_chunks_round_trip_and_a_picture_stored_twice_reads_as_one_row(tmp_path: Path) -> None:
    cache = FeatureCache(LocalBlobStore(tmp_path), "k")
    cache.store(["a", "b"], np.ones((2, 4)), np.zeros((2, 4)))
    cache.store(["b", "c"], np.full((2, 4), 2.0), np.full((2, 4), 3.0))

    found, cached = cache.load(["c", "x", "a", "b"])

    assert found.tolist() == [True, False, True, True]
    assert cached.features.dtype == np.float16
    assert cached.features[:3, 0].tolist() == [2.0, 0.0, 1.0]
    assert cached.features[3, 0] in (1.0, 2.0)  # one of the two rows of 'b', never a mix
    assert cached.mirrored[0, 0] == 3.0 and cached.mirrored[2, 0] == 0.0


def test_an_empty_cache_finds_nothing(tmp_path: Path) -> None:
    found, cached = FeatureCache(LocalBlobStore(tmp_path), "k").load(["a"])

    assert not found.any() and cached is None


def test_the_key_names_everything_that_changes_a_feature() -> None:
    keys = {
        feature_key(SPEC, POLICY),
        feature_key(CandidateSpec(**{**SPEC.to_dict(), "input_size": 64}), POLICY),
        feature_key(SPEC, PreprocessingPolicy(24, "rgb", "center_crop")),
        feature_key(SPEC, PreprocessingPolicy(32, "rgb", "stretch")),
    }
    assert len(keys) == 4
    with pytest.raises(InvalidInput):
        feature_key(CandidateSpec(kind="scratch_cnn", color="rgb", input_size=24, cnn_width=8, cnn_depth=1), POLICY)


def test_features_are_computed_once_then_read_from_the_cache(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = LocalBlobStore(tmp_path)
    images = pictures(5)
    shas = [f"sha{i}" for i in range(5)]
    computed: list[int] = []
    real = feature_cache._extract_batch

    def counting(batch, *args):
        computed.append(len(batch))
        return real(batch, *args)

    monkeypatch.setattr(feature_cache, "_extract_batch", counting)
    progress: list[tuple[int, ...]] = []
    cache = str(cache_dir)

    first = cached_features(
        blobs, SPEC, POLICY, shas[:3], images[:3], backbone_cache_dir=cache, report=lambda *p: progress.append(p)
    )
    again = cached_features(blobs, SPEC, POLICY, shas, images, backbone_cache_dir=str(cache_dir))

    assert computed == [3, 2]  # the second call computed only the two new pictures
    assert progress[0] == (0, 3) and progress[-1] == (3, 3)
    extractor = FeatureExtractor.for_spec(SPEC, image_size=24, cache_dir=cache_dir)
    plain, mirrored = extractor.extract(images), extractor.extract(images, mirrored=True)
    np.testing.assert_allclose(again.features.astype(np.float32), plain, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(again.mirrored.astype(np.float32), mirrored, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(first.features, again.features[:3])


def test_a_stored_cnn_base_is_run_once_per_picture_its_mirrored_rows_repeating_the_plain_ones(
    tmp_path: Path, cache_dir: Path
) -> None:
    import keras

    blobs = LocalBlobStore(tmp_path)
    inputs = keras.Input((24, 24, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    base.save(tmp_path / "base.keras")
    blobs.put("artifacts/a/base.keras", (tmp_path / "base.keras").read_bytes())
    images = np.concatenate([pictures(3), pictures(3, seed=1)[:, :, ::-1]])  # not mirror-symmetric
    shas = [f"sha{i}" for i in range(6)]

    cached = feature_cache.features_from_cache(
        blobs, "base-k", ("base", str(tmp_path), "artifacts/a/base.keras"), POLICY, shas, images,
        backbone_cache_dir=str(cache_dir),
    )  # fmt: skip

    expected = base.predict(images, verbose=0)
    np.testing.assert_allclose(cached.features.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(cached.mirrored, cached.features)
    assert feature_cache.pass_size(24) == 512 and feature_cache.pass_size(224) == 64


def test_a_picture_count_mismatch_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="picture ids"):
        cached_features(LocalBlobStore(tmp_path), SPEC, POLICY, ["a"], pictures(2), backbone_cache_dir=str(cache_dir))


def test_a_stop_between_batches_keeps_the_features_done(tmp_path: Path, cache_dir: Path) -> None:
    from cluster.feature_cache import INLINE_BATCH, OutOfTime

    blobs = LocalBlobStore(tmp_path)
    count = INLINE_BATCH + 8
    images, shas = pictures(count, seed=4), [f"p{i}" for i in range(count)]
    answers = iter([False, True])

    with pytest.raises(OutOfTime):
        cached_features(
            blobs, SPEC, POLICY, shas, images, backbone_cache_dir=str(cache_dir), should_stop=lambda: next(answers)
        )

    found, _ = FeatureCache(blobs, feature_key(SPEC, POLICY)).load(shas)
    assert found.sum() == INLINE_BATCH  # the first batch is cached; the next run computes only the rest
