"""What a classification answers for one picture: the top classes with their probabilities, and whether the
model is unsure (its best probability is below a threshold); and how sure an accuracy measured from the owner's
feedback is. Pure numpy; no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipelines.errors import InvalidInput
from pipelines.ood import DEFAULT_NONE_BELOW, none_of_the_above

DEFAULT_UNCERTAIN_BELOW = 0.5


@dataclass(frozen=True)
class Answer:
    """The best class, its probability, the `top` (label, probability) pairs best first, and the unsure flag."""

    label: str
    confidence: float
    top: tuple[tuple[str, float], ...]
    uncertain: bool
    none_of_the_above: bool = False
    reason: str | None = None  # why it is "none of the above", in words


def answer(probabilities: np.ndarray, class_names: Sequence[str], *, top_k: int, uncertain_below: float) -> Answer:
    """The answer for one picture's class probabilities (ties go to the class listed first)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 1 or len(probabilities) != len(class_names) or len(class_names) == 0:
        raise InvalidInput(
            f"Expected one probability per class ({len(class_names)}), got an array of shape {probabilities.shape}."
        )
    if top_k < 1:
        raise InvalidInput(f"top_k must be at least 1, not {top_k}.", field="top_k")
    if not 0.0 <= uncertain_below <= 1.0:
        raise InvalidInput(f"uncertain_below is a probability from 0 to 1, not {uncertain_below}.")
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    top = tuple((str(class_names[i]), round(float(probabilities[i]), 6)) for i in order)
    label, confidence = top[0]
    return Answer(label, confidence, top, confidence < uncertain_below)


def answers(
    probabilities: np.ndarray,
    class_names: Sequence[str],
    *,
    top_k: int,
    uncertain_below: float,
    known_share: np.ndarray | None = None,
    none_below: float = DEFAULT_NONE_BELOW,
) -> list[Answer]:
    """One answer per row of (pictures, classes) probabilities; with `known_share` (pipelines.ood), pictures
    less like the classes than all but `none_below` of the known validation pictures are "none of the above"."""
    out = [answer(row, class_names, top_k=top_k, uncertain_below=uncertain_below) for row in probabilities]
    if known_share is None:
        return out
    flagged = [none_of_the_above(float(share), none_below) for share in known_share]
    return [replace(a, none_of_the_above=flag, reason=why) for a, (flag, why) in zip(out, flagged, strict=True)]


def accuracy_interval(correct: int, total: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of an accuracy of `correct` out of `total`: honest for the
    small counts feedback starts with, where `correct / total` alone says little."""
    if total < 0 or not 0 <= correct <= total:
        raise InvalidInput(f"Cannot have {correct} right out of {total}.")
    if total == 0:
        return 0.0, 1.0
    share = correct / total
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    centre = share + z * z / (2 * total)
    scale = 1 + z * z / total
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)
