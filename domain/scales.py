"""Rating scales: every native rating becomes a normalised score on 1.0-5.0 (where the scale has an order)
and a ``satisfied`` flag. Pure functions, no I/O.

Rule (docs/metrics.md, "Scales"): a scale with a native good/bad keeps it as ``satisfied``; otherwise satisfied means a
normalised score >= 4.0 (top-two-box on a 5-point scale). Linear scales map their lowest value to 1.0 and their
highest to 5.0.
"""

from __future__ import annotations

from typing import NamedTuple

SATISFIED_THRESHOLD = 4.0


class ScaleError(ValueError):
    """The scale is unknown (``unknown_scale``) or the value is not on it (``invalid_rating``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Rating(NamedTuple):
    """A normalised rating: ``score`` is None for scales without an order beyond good/bad."""

    score: float | None
    satisfied: bool


def _linear(value: float, low: float, high: float) -> float:
    return 1.0 + (value - low) * 4.0 / (high - low)


def _from_score(score: float) -> Rating:
    return Rating(round(score, 6), score >= SATISFIED_THRESHOLD - 1e-9)


# numeric linear scales: name -> (lowest, highest, integers only)
_LINEAR: dict[str, tuple[float, float, bool]] = {
    "1-5": (1, 5, False),  # CSAT 1-5 (Zendesk CSAT v2, Intercom, Chatwoot, IVR, most exports); "4.0" accepted
    "1-3": (1, 3, True),
    "1-7": (1, 7, True),
    "1-10": (1, 10, True),
    "0-10": (0, 10, True),  # NPS-style likelihood question
}

# Freshdesk's 7-point satisfaction scale: -103 extremely unhappy ... 100 neutral ... 103 extremely happy
_FRESHDESK = {-103: 1, -102: 2, -101: 3, 100: 4, 101: 5, 102: 6, 103: 7}

# labelled scales: name -> {label: score}; labels compared case-insensitively with spaces/underscores folded
_LABELS: dict[str, dict[str, float]] = {
    # Help Scout: webhook labels (Great, Okay, Bad / Not Good) and report codes (1 great, 2 okay, 3 not good)
    "helpscout": {"great": 5.0, "okay": 3.0, "notgood": 1.0, "bad": 1.0, "1": 5.0, "2": 3.0, "3": 1.0},
    # generic five-point text labels (survey tools, chat widgets)
    "label5": {
        "verydissatisfied": 1.0, "dissatisfied": 2.0, "neutral": 3.0, "satisfied": 4.0, "verysatisfied": 5.0,
        "terrible": 1.0, "bad": 2.0, "okay": 3.0, "ok": 3.0, "good": 4.0, "amazing": 5.0, "excellent": 5.0,
    },
    # emoji scales (chat widgets, Chatwoot's emoji CSAT)
    "emoji": {
        "😡": 1.0, "😠": 1.0, "😞": 2.0, "🙁": 2.0, "😐": 3.0, "🙂": 4.0, "😊": 4.0, "😀": 5.0, "😍": 5.0, "🤩": 5.0,
    },
}

# good/bad scales (Zendesk CSAT v1 "good"/"bad", thumbs): label -> satisfied
_BINARY = {
    "good": True, "bad": False, "yes": True, "no": False, "thumbsup": True, "thumbsdown": False,
    "👍": True, "👎": False, "satisfied": True, "unsatisfied": False, "true": True, "false": False,
    "1": True, "0": False,
}

SCALES: tuple[str, ...] = (*_LINEAR, "freshdesk", *_LABELS, "good_bad")


def _fold(label: str) -> str:
    return "".join(label.lower().split()).replace("_", "").replace("-", "")


def _number(value: object, scale: str) -> float:
    if isinstance(value, bool):
        raise ScaleError("invalid_rating", f"boolean {value!r} is not a rating on scale {scale}")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ScaleError("invalid_rating", f"{value!r} is not a number on scale {scale}") from None
    if number != number:  # NaN
        raise ScaleError("invalid_rating", f"NaN is not a rating on scale {scale}")
    return number


def normalise_rating(value: object, scale: str) -> Rating:
    """Map a native rating on ``scale`` to a :class:`Rating`. Raises ScaleError (reason unknown_scale or
    invalid_rating); never returns a score outside 1.0-5.0."""
    if scale in _LINEAR:
        low, high, integers = _LINEAR[scale]
        number = _number(value, scale)
        if not low <= number <= high or (integers and not number.is_integer()):
            raise ScaleError("invalid_rating", f"{value!r} is outside scale {scale}")
        return _from_score(_linear(number, low, high))
    if scale == "freshdesk":
        number = _number(value, scale)
        if not number.is_integer() or int(number) not in _FRESHDESK:
            raise ScaleError("invalid_rating", f"{value!r} is not a Freshdesk rating (-103..-101, 100..103)")
        return _from_score(_linear(_FRESHDESK[int(number)], 1, 7))
    if scale in _LABELS:
        labels = _LABELS[scale]
        text = str(value).strip()
        score = labels.get(text, labels.get(_fold(text)))
        if score is None:
            raise ScaleError("invalid_rating", f"{value!r} is not a label of scale {scale}")
        return _from_score(score)
    if scale == "good_bad":
        text = str(value).strip()
        flag = _BINARY.get(text, _BINARY.get(_fold(text)))
        if flag is None:
            raise ScaleError("invalid_rating", f"{value!r} is not good/bad")
        return Rating(None, flag)
    raise ScaleError("unknown_scale", f"unknown rating scale {scale!r}; known: {', '.join(SCALES)}")
