"""Candidate specs (typed, round-trippable, strict about keys) and the default search per dataset shape."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from pipelines.candidates import (
    CandidateSpec,
    DatasetSummary,
    PastWinner,
    SearchOptions,
    estimate_cost,
    generate_candidates,
    similar_winners,
    summary_distance,
)
from pipelines.errors import InvalidInput
from pipelines.images import PreprocessingPolicy


def summary(
    side: int, color: str = "rgb", *, train: int = 50_000, classes: int = 10, resize: str = "stretch"
) -> DatasetSummary:
    return DatasetSummary(
        num_classes=classes,
        train_count=train,
        test_count=train // 5,
        min_per_class=train // classes,
        policy=PreprocessingPolicy(side, color, resize),
    )


MNIST_LIKE = summary(28, "gray", train=54_000)
CIFAR_LIKE = summary(32, train=42_500)
FLOWERS_LIKE = summary(224, train=408, classes=5, resize="center_crop")
TINY_GRAY_FEW = summary(28, "gray", train=300, classes=3)


def test_spec_round_trips_through_a_json_config() -> None:
    spec = CandidateSpec(
        kind="frozen_head",
        color="rgb",
        input_size=224,
        backbone="efficientnet_lite0",
        head="mlp",
        hidden_units=64,
        augmentation=frozenset({"shift", "flip"}),
    )
    config = json.loads(json.dumps(spec.to_dict()))

    assert config["augmentation"] == ["flip", "shift"]
    assert CandidateSpec.from_dict(config) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(CandidateSpec.from_dict(config))


def test_numpy_numbers_from_a_search_space_become_plain_python() -> None:
    spec = CandidateSpec.from_dict(
        {"kind": "scratch_cnn", "color": "gray", "input_size": np.int64(28), "cnn_width": np.int32(16),
         "cnn_depth": 2, "learning_rate": np.float32(0.002)}
    )  # fmt: skip

    assert type(spec.input_size) is int and type(spec.learning_rate) is float
    json.dumps(spec.to_dict())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"learning_rte": 0.1}, "learning_rte", id="typo-in-a-key"),
        pytest.param({"kind": "svm"}, "kind", id="unknown-kind"),
        pytest.param({"backbone": "resnet9000"}, "backbone", id="unknown-backbone"),
        pytest.param({"augmentation": ["flip", "blur"]}, "augmentation", id="unknown-augmentation"),
        pytest.param({"augmentation": "flip"}, "augmentation", id="augmentation-not-a-list"),
        pytest.param({"batch_size": 0}, "batch_size", id="zero-batch"),
        pytest.param({"max_epochs": 2.5}, "max_epochs", id="fractional-epochs"),
        pytest.param({"dropout": 1.5}, "dropout", id="dropout-above-one"),
        pytest.param({"learning_rate": -1.0}, "learning_rate", id="negative-learning-rate"),
        pytest.param({"head": "mlp"}, "hidden_units", id="mlp-without-hidden-units"),
        pytest.param({"input_size": True}, "input_size", id="bool-is-not-a-size"),
    ],
)
def test_bad_configs_fail_loudly_with_the_field(changes: dict, field: str) -> None:
    config = {"kind": "frozen_head", "color": "rgb", "input_size": 224, "backbone": "efficientnet_lite0"} | changes

    with pytest.raises(InvalidInput) as caught:
        CandidateSpec.from_dict(config)

    assert caught.value.field == field


def test_kind_specific_fields_are_required() -> None:
    with pytest.raises(InvalidInput, match="finetune_blocks"):
        CandidateSpec(kind="finetune", color="rgb", input_size=224, backbone="efficientnet_lite0")
    with pytest.raises(InvalidInput, match="cnn_width"):
        CandidateSpec(kind="scratch_cnn", color="gray", input_size=28)
    with pytest.raises(InvalidInput, match="backbone"):
        CandidateSpec(kind="scratch_cnn", color="gray", input_size=28, cnn_width=16, cnn_depth=2, backbone="x")


def test_titles_are_plain_words() -> None:
    frozen = CandidateSpec(kind="frozen_head", color="rgb", input_size=224, backbone="efficientnet_lite0")
    mirrored = CandidateSpec(
        kind="frozen_head", color="rgb", input_size=224, backbone="efficientnet_lite2", augmentation={"flip"}
    )
    tuned = CandidateSpec(
        kind="finetune", color="rgb", input_size=224, backbone="efficientnet_lite0", finetune_blocks=2
    )

    assert frozen.title() == "Pretrained EfficientNet-Lite0 features + simple classifier"
    assert mirrored.title() == (
        "Pretrained EfficientNet-Lite2 features + simple classifier, also learning from mirrored copies"
    )
    assert "top 2 blocks retrained" in tuned.title()
    assert all("_" not in spec.title() for spec in generate_candidates(MNIST_LIKE) + generate_candidates(FLOWERS_LIKE))


@pytest.mark.parametrize(
    ("shape", "first_kind", "kinds"),
    [
        pytest.param(MNIST_LIKE, "scratch_cnn", {"scratch_cnn", "frozen_head"}, id="tiny-gray-many"),
        pytest.param(CIFAR_LIKE, "scratch_cnn", {"scratch_cnn", "frozen_head", "finetune"}, id="tiny-rgb-many"),
        pytest.param(FLOWERS_LIKE, "frozen_head", {"frozen_head", "finetune"}, id="few-photos"),
        pytest.param(TINY_GRAY_FEW, "frozen_head", {"scratch_cnn", "frozen_head"}, id="tiny-gray-few"),
    ],
)
def test_defaults_follow_the_data(shape: DatasetSummary, first_kind: str, kinds: set[str]) -> None:
    specs = generate_candidates(shape)

    assert 3 <= len(specs) <= 8
    assert specs[0].kind == first_kind
    assert kinds <= {spec.kind for spec in specs}
    assert all(spec.color == shape.policy.color for spec in specs)
    assert len({spec.key() for spec in specs}) == len(specs)
    # The candidates suited to the data lead, cheapest first; poorer fits follow, cheapest first.
    suited = {"scratch_cnn"} if first_kind == "scratch_cnn" else {"frozen_head", "finetune"}
    lead = next((i for i, spec in enumerate(specs) if spec.kind not in suited), len(specs))
    for group in (specs[:lead], specs[lead:]):
        costs = [estimate_cost(spec, shape) for spec in group]
        assert costs == sorted(costs)
    assert all(spec.kind not in suited for spec in specs[lead:])


def test_photos_get_pretrained_features_at_their_size_and_tiny_pictures_are_upsampled() -> None:
    photos = [spec for spec in generate_candidates(FLOWERS_LIKE) if spec.backbone == "efficientnet_lite0"]
    tiny = [spec for spec in generate_candidates(MNIST_LIKE) if spec.backbone is not None]

    assert {spec.input_size for spec in photos} == {224}
    assert tiny and all(spec.input_size > 28 for spec in tiny)
    assert all("flip" not in spec.augmentation for spec in generate_candidates(MNIST_LIKE) if spec.cnn_width == 16)


def test_options_restrict_and_override() -> None:
    options = SearchOptions(
        backbones=("efficientnet_lite0",), max_epochs=3, batch_size=16, learning_rate=0.01, augmentation=frozenset()
    )

    specs = generate_candidates(FLOWERS_LIKE, options=options)

    assert specs and all(spec.backbone == "efficientnet_lite0" for spec in specs)
    assert {(spec.max_epochs, spec.batch_size, spec.learning_rate) for spec in specs} == {(3, 16, 0.01)}
    assert all(not spec.augmentation for spec in specs)
    only_cnns = generate_candidates(MNIST_LIKE, options=SearchOptions(kinds=("scratch_cnn",), max_candidates=1))
    assert [spec.kind for spec in only_cnns] == ["scratch_cnn"]


def test_unavailable_backbones_are_skipped() -> None:
    specs = generate_candidates(FLOWERS_LIKE, available=["efficientnet_lite0"])

    assert specs and {spec.backbone for spec in specs} == {"efficientnet_lite0"}


def test_options_refuse_unknown_names() -> None:
    with pytest.raises(InvalidInput):
        SearchOptions(backbones=("vgg",))
    with pytest.raises(InvalidInput):
        SearchOptions.from_dict({"epochs": 3})


def test_past_winners_on_similar_datasets_join_the_search() -> None:
    winner = CandidateSpec(
        kind="scratch_cnn", color="gray", input_size=32, cnn_width=24, cnn_depth=2, max_epochs=7, seed=3
    )
    far = CandidateSpec(kind="scratch_cnn", color="rgb", input_size=224, cnn_width=40, cnn_depth=4)
    history = [
        PastWinner(winner, summary(32, "gray", train=40_000), 0.99),
        PastWinner(far, FLOWERS_LIKE, 0.95),
    ]

    specs = generate_candidates(MNIST_LIKE, past_winners=history)

    adapted = [spec for spec in specs if spec.cnn_width == 24]
    assert len(adapted) == 1 and adapted[0].input_size == 28 and adapted[0].max_epochs == 7
    assert not any(spec.cnn_width == 40 for spec in specs)
    assert similar_winners(MNIST_LIKE, history) == [history[0]]


def test_summary_distance() -> None:
    assert summary_distance(MNIST_LIKE, MNIST_LIKE) == 0
    assert summary_distance(MNIST_LIKE, summary(28, "rgb")) == float("inf")
    assert summary_distance(MNIST_LIKE, FLOWERS_LIKE) > 1


def test_summary_round_trips() -> None:
    assert DatasetSummary.from_dict(json.loads(json.dumps(FLOWERS_LIKE.to_dict()))) == FLOWERS_LIKE
    with pytest.raises(InvalidInput):
        DatasetSummary.from_dict({**FLOWERS_LIKE.to_dict(), "extra": 1})


@pytest.mark.parametrize(("side", "stages"), [(8, 1), (16, 2), (28, 3), (32, 3), (64, 4)])
def test_cnn_templates_never_have_more_stages_than_the_size_allows(side: int, stages: int) -> None:
    from pipelines.candidates import max_cnn_depth
    from pipelines.cnn import build_scratch_cnn

    assert max_cnn_depth(side) == stages
    for spec in generate_candidates(summary(side, "gray", train=20_000)):
        if spec.kind == "scratch_cnn":
            assert spec.cnn_depth <= stages
            build_scratch_cnn(spec, (side, side, 1), 10)  # builds: no stage shrinks the picture to nothing
