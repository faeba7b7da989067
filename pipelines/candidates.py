"""Candidate models: the typed spec a search trial trains, the dataset summary it is chosen from, and the
default search (`generate_candidates`): candidates suited to the data first, cheapest first among them, with
past winners on similar datasets added.

A Ray Tune config dict becomes a spec with `CandidateSpec.from_dict(config)` on a trainable's first line, so
a typo in a key fails loudly instead of silently training the default.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from pipelines.backbones import BACKBONES
from pipelines.errors import InvalidInput
from pipelines.images import Color, PreprocessingPolicy

Kind = Literal["frozen_head", "finetune", "scratch_cnn"]
HeadKind = Literal["softmax", "mlp"]
Augmentation = Literal["flip", "shift", "rotate", "zoom", "contrast"]

KINDS: tuple[str, ...] = get_args(Kind)
HEAD_KINDS: tuple[str, ...] = get_args(HeadKind)
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
BACKBONE_KINDS = frozenset({"frozen_head", "finetune"})

# From-scratch CNN templates: (base filters, stages). Stage i has base * 2**i filters; see pipelines/cnn.py.
CNN_TEMPLATES: dict[str, tuple[int, int]] = {"small": (16, 2), "medium": (32, 2), "wide": (48, 3)}
_CNN_SIZE_WORDS = {"small": "Small", "medium": "Medium", "wide": "Wide"}
_AUGMENTATION_WORDS = {
    "flip": "mirrored",
    "shift": "shifted",
    "rotate": "rotated",
    "zoom": "zoomed",
    "contrast": "contrast-changed",
}
_BACKBONE_WORDS = {"efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite2": "EfficientNet-Lite2"}


@dataclass(frozen=True)
class CandidateSpec:
    """Everything that decides how one candidate model is built and trained; plain values only."""

    kind: Kind
    color: Color
    input_size: int  # the side the network sees; the data's own side (the policy's) is resized to it in-graph
    backbone: str | None = None
    head: HeadKind = "softmax"
    hidden_units: int = 0
    dropout: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 20
    augmentation: frozenset[Augmentation] = frozenset()
    finetune_blocks: int = 0
    cnn_width: int = 0
    cnn_depth: int = 0
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    class_balanced: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "augmentation", _augmentations(self.augmentation))
        _check_choice("kind", self.kind, KINDS)
        _check_choice("color", self.color, ("gray", "rgb"))
        _check_choice("head", self.head, HEAD_KINDS)
        for name, low in (("input_size", 8), ("batch_size", 1), ("max_epochs", 1), ("seed", 0)):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), low))
        for name in ("hidden_units", "finetune_blocks", "cnn_width", "cnn_depth"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), 0))
        for name, low, high in (
            ("dropout", 0.0, 0.95),
            ("label_smoothing", 0.0, 0.5),
            ("weight_decay", 0.0, 10.0),
            ("learning_rate", 1e-7, 10.0),
        ):
            object.__setattr__(self, name, _check_number(name, getattr(self, name), low, high))
        if not isinstance(self.class_balanced, bool):
            raise InvalidInput("class_balanced must be true or false.", field="class_balanced")
        self._check_kind_fields()

    def _check_kind_fields(self) -> None:
        if self.kind in BACKBONE_KINDS:
            if self.backbone not in BACKBONES:
                raise InvalidInput(
                    f"A '{self.kind}' candidate needs a backbone, one of {', '.join(sorted(BACKBONES))}; "
                    f"got {self.backbone!r}.",
                    field="backbone",
                )
        elif self.backbone is not None:
            raise InvalidInput("A from-scratch CNN has no pretrained backbone: leave 'backbone' out.", field="backbone")
        if self.head == "mlp" and self.hidden_units < 1:
            raise InvalidInput(
                "A one-hidden-layer ('mlp') head needs hidden_units of at least 1.", field="hidden_units"
            )
        if self.kind == "finetune" and self.finetune_blocks < 1:
            raise InvalidInput("A fine-tune candidate needs finetune_blocks of at least 1.", field="finetune_blocks")
        if self.kind == "scratch_cnn" and (self.cnn_width < 4 or self.cnn_depth < 1):
            raise InvalidInput(
                "A from-scratch CNN needs cnn_width of at least 4 and cnn_depth of at least 1.", field="cnn_width"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (augmentation as a sorted list): a Tune config or a catalog record."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["augmentation"] = sorted(self.augmentation)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CandidateSpec:
        """The inverse of `to_dict`; an unknown key raises InvalidInput instead of being ignored."""
        if not isinstance(values, Mapping):
            raise InvalidInput(f"A candidate spec must be a mapping of settings, not {type(values).__name__}.")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInput(
                f"Unknown candidate setting(s) {', '.join(map(repr, unknown))}. "
                f"Known settings: {', '.join(sorted(known))}.",
                field=unknown[0],
            )
        missing = sorted({"kind", "color", "input_size"} - set(values))
        if missing:
            raise InvalidInput(f"A candidate spec needs {', '.join(missing)}.", field=missing[0])
        return cls(**dict(values))

    def title(self) -> str:
        """The candidate in plain words, for the leaderboard."""
        if self.kind == "scratch_cnn":
            text = f"{_cnn_size_word(self)} CNN trained from scratch on your pictures"
        else:
            network = _BACKBONE_WORDS.get(self.backbone or "", self.backbone or "")
            if self.kind == "frozen_head":
                classifier = "simple classifier" if self.head == "softmax" else "small neural-network classifier"
                text = f"Pretrained {network} features + {classifier}"
            else:
                blocks = "block" if self.finetune_blocks == 1 else "blocks"
                text = f"Pretrained {network} with its top {self.finetune_blocks} {blocks} retrained on your pictures"
        if self.augmentation:
            words = [_AUGMENTATION_WORDS[name] for name in sorted(self.augmentation)]
            text += f", also learning from {_join_words(words)} copies"
        return text

    def key(self) -> str:
        """A short stable identifier (the same settings give the same key), for deduplication and logs."""
        parts = [f"{name}={value}" for name, value in sorted(self.to_dict().items()) if name != "seed"]
        return ";".join(parts)


@dataclass(frozen=True)
class DatasetSummary:
    """What candidate generation needs to know about a dataset (never the pictures themselves)."""

    num_classes: int
    train_count: int
    test_count: int
    min_per_class: int
    policy: PreprocessingPolicy

    def __post_init__(self) -> None:
        _check_int("num_classes", self.num_classes, 2)
        for name in ("train_count", "test_count", "min_per_class"):
            _check_int(name, getattr(self, name), 0)
        if not isinstance(self.policy, PreprocessingPolicy):
            raise InvalidInput("A dataset summary needs a PreprocessingPolicy.", field="policy")

    @property
    def is_gray(self) -> bool:
        return self.policy.color == "gray"

    @property
    def image_size(self) -> int:
        return self.policy.image_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "train_count": self.train_count,
            "test_count": self.test_count,
            "min_per_class": self.min_per_class,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DatasetSummary:
        expected = {"num_classes", "train_count", "test_count", "min_per_class", "policy"}
        if set(values) != expected:
            raise InvalidInput(f"A dataset summary needs exactly the keys {sorted(expected)}, got {sorted(values)}.")
        policy = PreprocessingPolicy.from_dict(values["policy"])
        return cls(**{**dict(values), "policy": policy})


@dataclass(frozen=True)
class SearchOptions:
    """The "advanced" choices an expert may make; None everywhere means "let the platform decide"."""

    backbones: tuple[str, ...] | None = None
    kinds: tuple[Kind, ...] | None = None
    max_epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augmentation: frozenset[Augmentation] | None = None
    max_candidates: int | None = None

    def __post_init__(self) -> None:
        if self.backbones is not None:
            object.__setattr__(self, "backbones", tuple(self.backbones))
            for name in self.backbones:
                _check_choice("backbones", name, tuple(sorted(BACKBONES)))
        if self.kinds is not None:
            object.__setattr__(self, "kinds", tuple(self.kinds))
            for kind in self.kinds:
                _check_choice("kinds", kind, KINDS)
        if self.augmentation is not None:
            object.__setattr__(self, "augmentation", _augmentations(self.augmentation))
        for name in ("max_epochs", "batch_size", "max_candidates"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _check_int(name, getattr(self, name), 1))
        if self.learning_rate is not None:
            object.__setattr__(self, "learning_rate", _check_number("learning_rate", self.learning_rate, 1e-7, 10.0))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SearchOptions:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInput(f"Unknown search option(s) {', '.join(map(repr, unknown))}.", field=unknown[0])
        return cls(**dict(values))


@dataclass(frozen=True)
class PastWinner:
    """A spec that won an earlier search, with the summary of the dataset it won on and its test accuracy."""

    spec: CandidateSpec
    summary: DatasetSummary
    test_accuracy: float


def generate_candidates(
    summary: DatasetSummary,
    *,
    options: SearchOptions | None = None,
    past_winners: Sequence[PastWinner] = (),
    available: Iterable[str] | None = None,
) -> list[CandidateSpec]:
    """The default search for a dataset: a handful of candidates, those suited to the data first (cheapest
    first among them), then poorer fits (cheapest first).

    `available` names the backbones that can be loaded here (default: all registered); past winners on
    similar datasets are adapted to this dataset and added; `options` restricts and overrides.
    """
    options = options or SearchOptions()
    usable = set(BACKBONES if available is None else available)
    if options.backbones is not None:
        usable &= set(options.backbones)
    suited, fallback = _default_candidates(summary)
    # Winners on similar data join the candidates suited to this data; poor fits come last in any case.
    suited = [_adapt(winner.spec, summary) for winner in similar_winners(summary, past_winners)] + suited
    ordered: list[CandidateSpec] = []
    for group in (suited, fallback):
        group = [_apply_options(spec, options) for spec in group]
        ordered += sorted(group, key=lambda spec: estimate_cost(spec, summary))
    kept = [
        spec
        for spec in ordered
        if (spec.backbone is None or spec.backbone in usable) and (options.kinds is None or spec.kind in options.kinds)
    ]
    unique: dict[str, CandidateSpec] = {}
    for spec in kept:
        unique.setdefault(spec.key(), spec)  # a past winner equal to a default keeps its earlier place
    result = list(unique.values())
    return result[: options.max_candidates] if options.max_candidates else result


def similar_winners(summary: DatasetSummary, past_winners: Sequence[PastWinner], limit: int = 2) -> list[PastWinner]:
    """Past winners whose dataset looks like this one (same colour, close image size, class and image count)."""
    scored = []
    for winner in past_winners:
        distance = summary_distance(summary, winner.summary)
        if distance <= 1.0:
            scored.append((distance, -winner.test_accuracy, winner.spec.key(), winner))
    scored.sort(key=lambda row: row[:3])
    return [row[-1] for row in scored[:limit]]


def summary_distance(a: DatasetSummary, b: DatasetSummary) -> float:
    """0 for the same kind of dataset; above 1 for unlike ones (other colour, or far in size or counts)."""
    if a.policy.color != b.policy.color:
        return math.inf
    size = abs(math.log2(a.image_size / b.image_size))  # one doubling = 1
    classes = abs(math.log(a.num_classes / b.num_classes)) / math.log(4)  # 4x the classes = 1
    images = abs(math.log(max(a.train_count, 1) / max(b.train_count, 1))) / math.log(10)  # 10x the images = 1
    return max(size, classes, images)


def estimate_cost(spec: CandidateSpec, summary: DatasetSummary) -> float:
    """Rough CPU-seconds to train `spec` on the dataset, used to order candidates cheapest first.

    Calibrated on 2-core machines: EfficientNet-Lite0 costs ~27 CPU-ms per 224 px image forward, Lite2 at
    260 px ~2.6 times that; a backward pass about doubles a forward one; cost scales with pixel count.
    """
    images = max(summary.train_count, 1)
    pixels = (spec.input_size / 224) ** 2
    if spec.kind == "scratch_cnn":
        width, depth = spec.cnn_width, spec.cnn_depth
        # First-stage convolutions dominate; each later stage has 4x fewer pixels and 2x the channels.
        per_image = 2.2e-9 * (spec.input_size**2) * (width**2) * 9 * (1 + 0.5 * (depth - 1)) * 3
        return per_image * images * spec.max_epochs * (1.4 if spec.augmentation else 1.0)
    forward = 0.027 * pixels * (2.6 if spec.backbone == "efficientnet_lite2" else 1.0)
    if spec.kind == "frozen_head":
        passes = 2 if "flip" in spec.augmentation else 1
        return forward * images * passes + 1e-5 * images * spec.max_epochs
    return forward * images * spec.max_epochs * (1 + 0.3 * spec.finetune_blocks)


def _default_candidates(summary: DatasetSummary) -> tuple[list[CandidateSpec], list[CandidateSpec]]:
    """(suited, fallback): candidates that fit this kind of data, then ones worth a try if time is left.

    Tiny pictures in numbers (digits, clothes, small objects) are best learnt from scratch; ImageNet
    features are the safe choice for photos and for few pictures, where a CNN from scratch overfits.
    """
    tiny = summary.image_size <= 64
    few = summary.train_count < 2000 or summary.min_per_class < 50
    color = summary.policy.color
    if tiny and not few:
        suited, fallback = _scratch_cnns(summary), _pretrained(summary, tiny=tiny)
    else:
        suited, fallback = _pretrained(summary, tiny=tiny), _scratch_cnns(summary)[:1] if tiny else []
    return [replace(spec, color=color) for spec in suited], [replace(spec, color=color) for spec in fallback]


def _scratch_cnns(summary: DatasetSummary) -> list[CandidateSpec]:
    side = summary.image_size
    epochs = 12 if summary.train_count >= 20_000 else 30
    common = {"kind": "scratch_cnn", "color": summary.policy.color, "input_size": side, "batch_size": 128}
    common |= {"learning_rate": 2e-3, "weight_decay": 5e-4, "label_smoothing": 0.1, "max_epochs": epochs}
    # Mirroring helps objects and clothes but can hurt symbols (a mirrored 2 is not a 2), so the wide
    # template tries it while the others do not; the search decides.
    stages = max_cnn_depth(side)
    return [
        CandidateSpec(
            **common,
            cnn_width=CNN_TEMPLATES["medium"][0],
            cnn_depth=min(CNN_TEMPLATES["medium"][1], stages),
            dropout=0.25,
            augmentation=frozenset({"shift"}),
        ),  # fmt: skip
        CandidateSpec(
            **common,
            cnn_width=CNN_TEMPLATES["wide"][0],
            cnn_depth=min(CNN_TEMPLATES["wide"][1], stages),
            dropout=0.3,
            augmentation=frozenset({"shift", "flip"}),
        ),  # fmt: skip
    ]


def _pretrained(summary: DatasetSummary, *, tiny: bool) -> list[CandidateSpec]:
    # ImageNet features need objects of roughly ImageNet scale: tiny pictures are upsampled in-graph.
    lite0_size = 96 if tiny else summary.image_size
    lite2_size = 128 if tiny else max(summary.image_size, BACKBONES["efficientnet_lite2"].default_size)
    common = {"kind": "frozen_head", "color": summary.policy.color, "augmentation": frozenset({"flip"})}
    common |= {"batch_size": 256, "max_epochs": 100, "learning_rate": 1e-3, "weight_decay": 1e-3}
    specs = [
        CandidateSpec(**common, backbone="efficientnet_lite0", input_size=lite0_size),
        CandidateSpec(**common, backbone="efficientnet_lite2", input_size=lite2_size),
        CandidateSpec(
            **common, backbone="efficientnet_lite0", input_size=lite0_size, head="mlp", hidden_units=256, dropout=0.3
        ),
    ]
    specs.append(
        CandidateSpec(
            kind="finetune",
            color=summary.policy.color,
            backbone="efficientnet_lite0",
            input_size=lite0_size,
            finetune_blocks=2,
            learning_rate=3e-4,
            batch_size=32,
            max_epochs=10 if summary.train_count >= 5000 else 20,
            dropout=0.2,
            label_smoothing=0.1,
            augmentation=frozenset({"flip", "shift"}),
        )
    )
    return specs


def _adapt(spec: CandidateSpec, summary: DatasetSummary) -> CandidateSpec:
    """A past winner made to fit this dataset: its colour, and its own side (and stages it allows) for
    from-scratch CNNs."""
    if spec.kind != "scratch_cnn":
        return replace(spec, color=summary.policy.color)
    side = summary.image_size
    depth = min(spec.cnn_depth, max_cnn_depth(side))
    return replace(spec, color=summary.policy.color, input_size=side, cnn_depth=depth)


def max_cnn_depth(side: int) -> int:
    """How many template stages (3x3 valid convolution, then 2x2 pooling) a `side`-pixel picture allows."""
    stages = 0
    while (side - 2) // 2 >= 1:
        side = (side - 2) // 2
        stages += 1
    return max(stages, 1)


def _apply_options(spec: CandidateSpec, options: SearchOptions) -> CandidateSpec:
    changes: dict[str, Any] = {}
    if options.max_epochs is not None:
        changes["max_epochs"] = options.max_epochs
    if options.batch_size is not None:
        changes["batch_size"] = options.batch_size
    if options.learning_rate is not None:
        changes["learning_rate"] = options.learning_rate
    if options.augmentation is not None:
        changes["augmentation"] = options.augmentation
    return replace(spec, **changes) if changes else spec


def _cnn_size_word(spec: CandidateSpec) -> str:
    for name, (width, depth) in CNN_TEMPLATES.items():
        if (spec.cnn_width, spec.cnn_depth) == (width, depth):
            return _CNN_SIZE_WORDS[name]
    return f"{spec.cnn_depth}-stage, {spec.cnn_width}-filter"


def _join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _augmentations(value: Any) -> frozenset[Augmentation]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(
            f"Augmentation must be a list of names from {', '.join(AUGMENTATIONS)}, not {value!r}.",
            field="augmentation",
        )
    names = frozenset(value)
    unknown = sorted(map(str, names - set(AUGMENTATIONS)))
    if unknown:
        raise InvalidInput(
            f"Unknown augmentation(s) {', '.join(unknown)}. Choose from {', '.join(AUGMENTATIONS)}.",
            field="augmentation",
        )
    return names  # type: ignore[return-value]


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidInput(f"'{name}' must be one of {', '.join(choices)}, not {value!r}.", field=name)


def _check_int(name: str, value: Any, low: int) -> int:
    """The value as a plain int (Tune search spaces may hand over numpy numbers), or InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InvalidInput(f"'{name}' must be a whole number of at least {low}, not {value!r}.", field=name)
    return int(value)


def _check_number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise InvalidInput(f"'{name}' must be a number from {low:g} to {high:g}, not {value!r}.", field=name)
    return float(value)
