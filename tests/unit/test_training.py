"""Training each candidate kind on tiny synthetic pictures: epochs reported, stop on request, best weights kept."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from pipelines import training
from pipelines.candidates import CandidateSpec
from pipelines.cnn import build_scratch_cnn, split_features
from pipelines.errors import InvalidInput
from pipelines.features import FeatureExtractor, FeatureSet, split_backbone
from pipelines.training import StartFrom, TrainedCandidate, TrainingData, train_candidate

CLASSES = ("bars", "columns", "dots")


def pictures(per_class: int, side: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal bars, vertical bars or a dot grid, with noise: easy for a CNN, not for a constant."""
    rng = np.random.default_rng(seed)
    grid = np.indices((side, side))
    patterns = [(grid[0] // 2) % 2, (grid[1] // 2) % 2, ((grid[0] // 2) % 2) * ((grid[1] // 2) % 2)]
    labels = np.repeat(np.arange(3), per_class)
    images = np.stack([patterns[label] * 200 for label in labels]).astype(np.float32)
    images += rng.normal(scale=30, size=images.shape)
    images = np.clip(images, 0, 255).astype(np.uint8)[..., np.newaxis].repeat(channels, axis=3)
    return images, labels


def dataset(side: int, channels: int, per_class: int = 12) -> TrainingData:
    train_images, train_labels = pictures(per_class, side, channels, seed=0)
    val_images, val_labels = pictures(4, side, channels, seed=1)
    return TrainingData(train_images, train_labels, val_images, val_labels, CLASSES)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backbones")


CNN = CandidateSpec(
    kind="scratch_cnn", color="gray", input_size=16, cnn_width=8, cnn_depth=2, max_epochs=2, batch_size=8,
    learning_rate=0.01, augmentation=frozenset({"shift"}),
)  # fmt: skip


def test_scratch_cnn_reports_every_epoch_and_predicts() -> None:
    data = dataset(16, 1)
    seen: list[tuple[int, dict[str, float]]] = []

    trained = train_candidate(CNN, data, on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)) or False)

    assert [epoch for epoch, _ in seen] == [1, 2]
    assert {"val_accuracy", "train_accuracy", "loss", "seconds"} <= set(seen[0][1])
    assert trained.epochs_run == 2 and trained.stopped_because == "reached the epoch limit"
    assert trained.val_accuracy == max(metrics["val_accuracy"] for _, metrics in seen)
    proba = trained.predict_proba(data.val_images)
    assert proba.shape == (12, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert trained.model.input.dtype == "uint8"


def test_returning_true_stops_training() -> None:
    trained = train_candidate(replace(CNN, max_epochs=5), dataset(16, 1), on_epoch=lambda epoch, metrics: True)

    assert trained.epochs_run == 1 and trained.stopped_because == "asked to stop"


def test_cnn_template_splits_into_feature_base_and_head() -> None:
    model = build_scratch_cnn(CNN, (16, 16, 1), 3)
    images, _ = pictures(2, 16, 1, seed=3)

    base, head = split_features(model, CLASSES)

    assert base.output_shape == (None, 64)  # 16 px -> 7 -> 2: a 2x2 map of 16 filters, flattened
    np.testing.assert_allclose(head.predict_proba(base(images).numpy()), model(images).numpy(), atol=1e-5)


def test_a_split_cnn_joins_back_with_its_own_or_a_refitted_head() -> None:
    from pipelines.cnn import join_features
    from pipelines.heads import Head

    model = build_scratch_cnn(CNN, (16, 16, 1), 3)
    images, _ = pictures(4, 16, 1, seed=5)
    base, head = split_features(model, CLASSES)

    joined = join_features(base, head)

    np.testing.assert_allclose(joined(images).numpy(), model(images).numpy(), atol=1e-6)
    wider = Head(np.ones((64, 4), np.float32), np.zeros(4, np.float32), (*CLASSES, "new"))
    grown = join_features(base, wider)
    assert grown.output_shape == (None, 4)
    again, head_again = split_features(grown, wider.class_names)  # a grown model splits like a trained one
    assert head_again.class_names == wider.class_names and again.output_shape == (None, 64)


def test_cnn_refuses_too_many_stages_for_the_size() -> None:
    with pytest.raises(InvalidInput, match="stages"):
        build_scratch_cnn(replace(CNN, cnn_depth=6), (16, 16, 1), 3)


def test_frozen_head_learns_on_backbone_features(cache_dir: Path) -> None:
    spec = CandidateSpec(
        kind="frozen_head", color="rgb", input_size=32, backbone="efficientnet_lite0", max_epochs=30,
        learning_rate=0.01, batch_size=16, augmentation=frozenset({"flip"}),
    )  # fmt: skip
    data = dataset(24, 3)

    trained = train_candidate(spec, data, backbone_cache_dir=cache_dir, threads=2)

    assert trained.head is not None and trained.model is None and trained.mirror_at_test
    assert trained.val_accuracy > 0.9
    assert trained.predict_proba(data.val_images).shape == (12, 3)


def test_finetune_trains_the_top_on_cached_activations(cache_dir: Path) -> None:
    spec = CandidateSpec(
        kind="finetune", color="gray", input_size=32, backbone="efficientnet_lite0", finetune_blocks=1,
        max_epochs=2, batch_size=16, learning_rate=1e-3, augmentation=frozenset({"flip"}),
    )  # fmt: skip
    data = dataset(24, 1)

    trained = train_candidate(spec, data, backbone_cache_dir=cache_dir)

    assert trained.model is not None and trained.epochs_run == 2
    assert trained.model.input_shape == (None, 24, 24, 1)
    assert trained.model.get_layer("mirror_average") is not None
    proba = trained.predict_proba(data.val_images)
    assert np.mean(proba.argmax(axis=1) == data.val_labels) == pytest.approx(trained.val_accuracy, abs=1e-6)


def test_split_backbone_recomposes_the_backbone(cache_dir: Path) -> None:
    from pipelines.backbones import load_backbone

    backbone = load_backbone("efficientnet_lite0", cache_dir, input_size=32)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)

    bottom, top = split_backbone(backbone, 2)
    activations, features = bottom(images)

    assert top.input_shape[1:] == activations.shape[1:]
    np.testing.assert_allclose(top(activations).numpy(), backbone(images).numpy(), atol=1e-5)
    np.testing.assert_allclose(features.numpy(), backbone(images).numpy(), atol=1e-5)


def test_feature_extractor_mirrors_and_checks_input(cache_dir: Path) -> None:
    spec = CandidateSpec(kind="frozen_head", color="gray", input_size=32, backbone="efficientnet_lite0")
    extractor = FeatureExtractor.for_spec(spec, image_size=16, cache_dir=cache_dir)
    images, _ = pictures(1, 16, 1, seed=4)

    mirrored = extractor.extract(images, mirrored=True)

    np.testing.assert_allclose(mirrored, extractor.extract(images[:, :, ::-1]), atol=1e-5)
    with pytest.raises(InvalidInput):
        extractor.extract(images.astype(np.float32))
    with pytest.raises(InvalidInput):
        extractor.extract(np.zeros((1, 16, 16, 3), np.uint8))


def test_augmented_batches_stay_pictures() -> None:
    images, labels = pictures(4, 16, 3, seed=5)

    batches = training.make_dataset(images, labels, 3, batch_size=5, shuffle=True, augmentation=["flip", "shift"])
    batch_images, batch_labels = next(iter(batches))

    assert batch_images.dtype == "uint8" and tuple(batch_images.shape) == (5, 16, 16, 3)
    assert tuple(batch_labels.shape) == (5, 3)


def test_training_data_is_checked() -> None:
    images, labels = pictures(2, 8, 1, seed=6)
    with pytest.raises(InvalidInput):
        TrainingData(images.astype(np.float32), labels, images, labels, CLASSES)
    with pytest.raises(InvalidInput):
        TrainingData(images, labels + 5, images, labels, CLASSES)
    with pytest.raises(InvalidInput):
        train_candidate(
            CandidateSpec(kind="frozen_head", color="gray", input_size=32, backbone="efficientnet_lite0"),
            TrainingData(images, labels, images, labels, CLASSES),
        )


def test_configure_threads_can_be_called_again() -> None:
    training.configure_threads(2)
    training.configure_threads(2)
    with pytest.raises(InvalidInput):
        training.configure_threads(0)


def test_on_best_sees_each_best_epoch_and_start_continues_after_it() -> None:
    data = dataset(16, 1)
    spec = replace(CNN, max_epochs=4)
    best: list[tuple[int, float, list[np.ndarray]]] = []
    seen: list[float] = []

    def on_best(candidate: TrainedCandidate) -> None:
        best.append((candidate.epochs_run, candidate.val_accuracy, candidate.model.get_weights()))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append(metrics["val_accuracy"])
        return epoch == 2  # stopped after two epochs, as a lost node would stop it

    first = train_candidate(spec, data, on_epoch=on_epoch, on_best=on_best)

    assert best[0][0] == 1 and [b[1] for b in best] == sorted({b[1] for b in best})  # rising accuracies
    assert best[-1][1] == max(seen) == first.val_accuracy
    epoch, accuracy, weights = best[-1]
    epochs: list[int] = []

    resumed = train_candidate(
        spec,
        data,
        on_epoch=lambda e, metrics: epochs.append(e) or False,
        start=StartFrom(epoch, accuracy, weights=weights),
    )

    assert epochs == list(range(epoch + 1, 5)) and resumed.epochs_run == 4
    assert resumed.val_accuracy >= accuracy


def test_a_start_at_the_last_epoch_gives_back_the_checkpointed_model() -> None:
    data = dataset(16, 1)
    trained = train_candidate(CNN, data)

    again = train_candidate(CNN, data, start=StartFrom(2, 0.5, weights=trained.model.get_weights()))

    assert again.epochs_run == 2 and again.val_accuracy == 0.5  # nothing trained: the start is the best
    assert np.allclose(again.predict_proba(data.val_images), trained.predict_proba(data.val_images), atol=1e-6)


def test_a_frozen_head_continues_from_its_checkpointed_head(cache_dir: Path) -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 20)
    features = (rng.normal(size=(60, 8)) + labels[:, None] * 1.5).astype(np.float32)
    spec = CandidateSpec(
        kind="frozen_head", color="rgb", input_size=32, backbone="efficientnet_lite0", max_epochs=6,
        learning_rate=0.01, batch_size=16,
    )  # fmt: skip
    sets = (FeatureSet(features[::2], labels[::2]), FeatureSet(features[1::2], labels[1::2]))
    data = dataset(16, 3)
    heads: list[TrainedCandidate] = []

    train = partial(train_candidate, data=data, features=sets, backbone_cache_dir=cache_dir)

    train(spec, on_best=heads.append, on_epoch=lambda e, m: e == 3)

    kept = heads[-1]
    assert kept.head is not None and kept.model is None and kept.epochs_run <= 3
    epochs: list[int] = []
    start = StartFrom(kept.epochs_run, kept.val_accuracy, head=kept.head)
    resumed = train(spec, start=start, on_epoch=lambda e, m: epochs.append(e) or False)
    assert epochs == list(range(kept.epochs_run + 1, 7)) and resumed.val_accuracy >= kept.val_accuracy
    same = train(replace(spec, max_epochs=kept.epochs_run), start=start)
    assert np.allclose(same.head.predict_proba(features), kept.head.predict_proba(features), atol=1e-5)
    with pytest.raises(InvalidInput, match="another kind"):
        train_candidate(CNN, data, start=start)
