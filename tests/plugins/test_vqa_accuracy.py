"""The official VQA accuracy against hand-computed values (leave-one-out, min(1, n/3), mean)."""

import pytest

from mmreg_plugins.tasks._vqa_accuracy import accuracy_by_type, normalise_answer, soft_score, vqa_accuracy


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        # ten identical answers; the prediction differs only in case and a period: normalised to "yes"
        ("Yes.", ["yes"] * 10, 1.0),
        ("yes", ["yes"] * 10, 1.0),
        ("no", ["yes"] * 10, 0.0),
        # m of ten match: (m * min(1,(m-1)/3) + (10-m) * min(1,m/3)) / 10
        ("red", ["red"] + ["blue"] * 9, 0.3),
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6),
        ("red", ["red"] * 3 + ["blue"] * 7, 0.9),
        ("red", ["red"] * 4 + ["blue"] * 6, 1.0),
        # number words become digits, articles go, contractions are restored (prediction side)
        ("two", ["2"] * 3 + ["3"] * 7, 0.9),
        ("A dog", ["dog"] * 2 + ["cat"] * 8, 0.6),
        ("dont", ["don’t"] * 10, 1.0),
        # a digit-comma-digit deletes commas; differing human answers lose their punctuation too
        ("1,000", ["1000"] * 4 + ["many"] * 6, 1.0),
        ("red blue", ["red/blue"] * 2 + ["red"] * 8, 0.6),
        # identical human answers are left as they are (the official condition): "red blue" != "red/blue"
        ("red/blue", ["red/blue"] * 10, 0.0),
        # three answers: leave out cat -> 1/3, dog -> 2/3, cat -> 1/3; mean 4/9
        ("cat", ["cat", "dog", "cat"], 4 / 9),
    ],
)
def test_vqa_accuracy_hand_computed(prediction, answers, expected):
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_normalisation_steps():
    assert normalise_answer("  The Two Dogs?\n") == "2 dogs"
    assert normalise_answer("3.5") == "3.5"  # a period before a digit stays
    assert normalise_answer("on the left.") == "on left"
    assert normalise_answer("youre") == "you’re"


def test_soft_scores_are_the_official_accuracy_with_ten_answers():
    for m in range(11):
        assert soft_score(m) == pytest.approx(vqa_accuracy("x", ["x"] * m + ["y"] * (10 - m)))


def test_question_without_answers_has_no_accuracy():
    with pytest.raises(ValueError, match="without human answers"):
        vqa_accuracy("yes", [])


def test_accuracy_by_answer_type():
    out = accuracy_by_type([(1.0, "yes/no"), (0.0, "yes/no"), (0.6, "number"), (0.3, None)])
    assert out == pytest.approx({"vqa_accuracy": 1.9 / 4, "vqa_accuracy/yes/no": 0.5, "vqa_accuracy/number": 0.6})


def test_punctuation_is_the_official_scripts():
    """vqaEval.py's ``punct``: ! - { } among the marks, : and ' not (10:30 and contractions stay)."""
    assert normalise_answer("Yes!") == "yes"
    assert normalise_answer("t-shirt") == "t shirt"
    assert normalise_answer("{red}") == "red"
    assert normalise_answer("10:30") == "10:30"
    assert normalise_answer("it's") == "it's"
