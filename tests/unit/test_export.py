"""Exports predict what the platform predicts on the same pictures: .keras within 1e-4, .tflite within 1e-3."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipelines import export
from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.features import FeatureExtractor, FeatureSet, head_from_features, mirror_width
from pipelines.images import PreprocessingPolicy
from pipelines.training import TrainedCandidate, TrainingData, train_candidate

CLASSES = ("red", "green", "blue")
POLICY = PreprocessingPolicy(image_size=20, color="rgb", resize="center_crop")


def pictures(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """20x20 RGB pictures, mostly one colour per class, with a brighter left half (so mirroring matters)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.uniform(0, 90, size=(len(labels), 20, 20, 3))
    images[np.arange(len(labels)), :, :, labels] += 120
    images[:, :, :10] += 40
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backbones")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    train_images, train_labels = pictures(6, seed=0)
    val_images, val_labels = pictures(2, seed=1)
    return TrainingData(train_images, train_labels, val_images, val_labels, CLASSES)


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return pictures(2, seed=2)[0]


def head_candidate(cache_dir: Path, data: TrainingData, *, head: str, mirror: bool) -> TrainedCandidate:
    spec = CandidateSpec(
        kind="frozen_head", color="rgb", input_size=32, backbone="efficientnet_lite0", max_epochs=5,
        head=head, hidden_units=8 if head == "mlp" else 0, augmentation=frozenset({"flip"} if mirror else ()),
    )  # fmt: skip
    extractor = FeatureExtractor.for_spec(spec, image_size=POLICY.image_size, cache_dir=cache_dir)
    train = FeatureSet.compute(extractor, data.train_images, data.train_labels, mirror=mirror)
    fitted, history = head_from_features(spec, train, None, CLASSES)
    return TrainedCandidate(
        spec, CLASSES, 0.0, len(history.epochs), 0.0, "", feature_model=extractor.model, head=fitted
    )


def export_model(trained: TrainedCandidate) -> keras.Model:
    if trained.head is None:
        return trained.model
    return export.head_classifier(trained.feature_model, trained.head, mirror=trained.mirror_at_test)


@pytest.fixture(scope="module")
def candidates(cache_dir: Path, data: TrainingData) -> dict[str, TrainedCandidate]:
    cnn = CandidateSpec(
        kind="scratch_cnn", color="rgb", input_size=20, cnn_width=4, cnn_depth=2, max_epochs=1, batch_size=6
    )
    finetune = CandidateSpec(
        kind="finetune", color="rgb", input_size=32, backbone="efficientnet_lite0", finetune_blocks=1,
        max_epochs=1, batch_size=6, augmentation=frozenset({"flip"}),
    )  # fmt: skip
    return {
        "scratch_cnn": train_candidate(cnn, data),
        "finetune": train_candidate(finetune, data, backbone_cache_dir=cache_dir),
        "softmax_head": head_candidate(cache_dir, data, head="softmax", mirror=True),
        "mlp_head": head_candidate(cache_dir, data, head="mlp", mirror=False),
    }


@pytest.mark.parametrize("name", ["scratch_cnn", "finetune", "softmax_head", "mlp_head"])
def test_keras_export_predicts_like_the_platform(
    name: str, candidates: dict[str, TrainedCandidate], test_images: np.ndarray, tmp_path: Path
) -> None:
    trained = candidates[name]
    path = export.export_keras(export_model(trained), tmp_path / "model.keras", class_names=CLASSES, policy=POLICY)

    loaded = keras.models.load_model(path)  # safe mode: no custom code in the file

    expected = trained.predict_proba(test_images)
    np.testing.assert_allclose(loaded(test_images).numpy(), expected, atol=1e-3)  # float32 sums, other order
    metadata = export.read_metadata(path)
    assert metadata["class_names"] == list(CLASSES) and metadata["policy"] == POLICY.to_dict()
    assert "uint8" in metadata["input_contract"]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("name", ["scratch_cnn", "mlp_head"])
def test_tflite_export_predicts_like_the_platform(
    name: str, candidates: dict[str, TrainedCandidate], test_images: np.ndarray, tmp_path: Path
) -> None:
    trained = candidates[name]

    path = export.export_tflite(export_model(trained), tmp_path / "model.tflite")

    np.testing.assert_allclose(export.tflite_predict(path, test_images), trained.predict_proba(test_images), atol=1e-3)


def test_mirror_layer_is_exact(candidates: dict[str, TrainedCandidate], test_images: np.ndarray) -> None:
    image = keras.Input((20, 20, 3))
    mirrored = keras.Model(image, mirror_width(image, 20, name="m"))

    np.testing.assert_array_equal(mirrored(test_images.astype(np.float32)).numpy(), test_images[:, :, ::-1])


def test_metadata_must_fit_the_model(candidates: dict[str, TrainedCandidate], tmp_path: Path) -> None:
    model = candidates["scratch_cnn"].model
    with pytest.raises(InvalidInput):
        export.export_keras(
            model, tmp_path / "m.keras", class_names=CLASSES, policy=PreprocessingPolicy(28, "rgb", "stretch")
        )
    with pytest.raises(InvalidInput):
        export.export_keras(model, tmp_path / "m.keras", class_names=CLASSES[:2], policy=POLICY)
    with pytest.raises(InvalidInput):
        export.export_keras(model, tmp_path / "m.h5", class_names=CLASSES, policy=POLICY)
