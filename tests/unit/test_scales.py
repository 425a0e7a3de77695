import pytest

from domain.scales import SCALES, ScaleError, normalise_rating


@pytest.mark.parametrize(("value", "scale", "score", "satisfied"), [
    (1, "1-5", 1.0, False), (3, "1-5", 3.0, False), (4, "1-5", 4.0, True), ("5", "1-5", 5.0, True),
    ("4.0", "1-5", 4.0, True), (3.5, "1-5", 3.5, False),
    (1, "1-3", 1.0, False), (2, "1-3", 3.0, False), (3, "1-3", 5.0, True),
    (5, "1-7", 1 + 4 * 4 / 6, False), (6, "1-7", 1 + 5 * 4 / 6, True), (4, "1-7", 3.0, False),
    (1, "1-10", 1.0, False), (7, "1-10", 1 + 6 * 4 / 9, False), (8, "1-10", 1 + 7 * 4 / 9, True),
    (0, "0-10", 1.0, False), (7, "0-10", 3.8, False), (8, "0-10", 4.2, True), (10, "0-10", 5.0, True),
    (-103, "freshdesk", 1.0, False), (-101, "freshdesk", 1 + 2 * 4 / 6, False), (100, "freshdesk", 3.0, False),
    (101, "freshdesk", 1 + 4 * 4 / 6, False), (102, "freshdesk", 1 + 5 * 4 / 6, True),
    ("103", "freshdesk", 5.0, True),
    ("great", "helpscout", 5.0, True), ("Okay", "helpscout", 3.0, False), ("Not Good", "helpscout", 1.0, False),
    ("not_good", "helpscout", 1.0, False), (1, "helpscout", 5.0, True), (3, "helpscout", 1.0, False),
    ("Very satisfied", "label5", 5.0, True), ("neutral", "label5", 3.0, False), ("bad", "label5", 2.0, False),
    ("😍", "emoji", 5.0, True), ("😐", "emoji", 3.0, False), ("😡", "emoji", 1.0, False),
])
def test_scale_mapping(value: object, scale: str, score: float, satisfied: bool) -> None:
    rating = normalise_rating(value, scale)
    assert rating.score == pytest.approx(score, abs=1e-6)
    assert rating.satisfied is satisfied


@pytest.mark.parametrize(("value", "satisfied"), [("good", True), ("Bad", False), ("👍", True), ("no", False)])
def test_good_bad_has_no_score(value: str, satisfied: bool) -> None:
    rating = normalise_rating(value, "good_bad")
    assert rating.score is None and rating.satisfied is satisfied


@pytest.mark.parametrize(("value", "scale"), [
    (0, "1-5"), (6, "1-5"), ("x", "1-5"), (True, "1-5"), ("nan", "1-5"), (2.5, "1-10"), (11, "0-10"),
    (99, "freshdesk"), (-104, "freshdesk"), ("fine", "helpscout"), ("meh", "good_bad"), ("🤷", "emoji"),
])
def test_invalid_rating(value: object, scale: str) -> None:
    with pytest.raises(ScaleError) as info:
        normalise_rating(value, scale)
    assert info.value.reason == "invalid_rating"


def test_unknown_scale() -> None:
    with pytest.raises(ScaleError) as info:
        normalise_rating(3, "stars-6")
    assert info.value.reason == "unknown_scale"


def test_every_scale_maps_into_range() -> None:
    samples = {"1-5": 5, "1-3": 3, "1-7": 7, "1-10": 10, "0-10": 10, "freshdesk": 103, "helpscout": "great",
               "label5": "good", "emoji": "🙂", "good_bad": "good"}
    assert set(samples) == set(SCALES)
    for scale, value in samples.items():
        score = normalise_rating(value, scale).score
        assert score is None or 1.0 <= score <= 5.0
