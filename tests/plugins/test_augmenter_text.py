"""The text augmenter on hand-checkable captions, with probabilities of 0 and 1."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmreg.components import Sample
from mmreg.errors import ConfigError, InvalidParams
from mmreg.plugins import load_plugins

AUGMENTERS = load_plugins().registry("augmenters")
OFF = {"p_synonym": 0.0, "p_insert": 0.0, "p_swap": 0.0, "p_delete": 0.0}


def build(**params):
    return AUGMENTERS.build("text", {**OFF, **params}, seed=0)


def sample(caption: str, size: tuple[int, int] = (48, 40)) -> Sample:
    image = Image.new("RGB", size, (30, 60, 200))
    ImageDraw.Draw(image).rectangle([3, 4, 20, 18], fill=(220, 40, 30))
    return Sample(image, caption, label=2, question="what colour is the square?", answer="red")


def caption(augment, text: str, seed: int = 0) -> str:
    return augment(sample(text), np.random.default_rng(seed)).caption


def test_all_off_leaves_the_caption():
    assert caption(build(), "a red square on the left.") == "a red square on the left."


def test_only_the_caption_changes():
    augment = build(p_synonym=1.0, p_insert=1.0, p_swap=1.0, p_delete=0.5, synonyms={"red": ["crimson"]})
    for size in [(32, 32), (48, 40)]:
        original = sample("a red square", size)
        out = augment(original, np.random.default_rng(3))
        assert out.image is original.image and out.image.size == size and out.image.mode == "RGB"
        assert np.asarray(out.image).dtype == np.uint8
        assert (out.label, out.question, out.answer, out.views) == (2, "what colour is the square?", "red", None)
        assert out.caption != original.caption


def test_delete_everything_keeps_one_word():
    augment = build(p_delete=1.0)
    for text in ["red", "a red square", "a small red square on the left"]:
        for seed in range(20):
            out = caption(augment, text, seed)
            assert out and len(out.split()) == 1 and out in text.split()


def test_swap_exchanges_neighbours_once():
    augment = build(p_swap=1.0)
    assert caption(augment, "red square") == "square red"
    assert caption(augment, "a b c d") == "b a d c"
    assert caption(augment, "a b c") == "b a c"


def test_synonym_table_replaces_words_keeping_case_and_punctuation():
    augment = build(p_synonym=1.0, synonyms={"red": ["crimson"], "Square": ["block"]})
    assert caption(augment, "a red square") == "a crimson block"
    assert caption(augment, "Red, a SQUARE.") == "Crimson, a Block."
    assert caption(augment, "a blue circle") == "a blue circle"  # no entry: untouched


def test_synonym_choice_is_among_the_table():
    augment = build(p_synonym=1.0, synonyms={"red": ["crimson", "scarlet"]})
    seen = {caption(augment, "a red square", seed) for seed in range(30)}
    assert seen == {"a crimson square", "a scarlet square"}


def test_insert_adds_only_words_already_there():
    augment = build(p_insert=1.0)
    for seed in range(20):
        words = caption(augment, "a red square.", seed).split()
        assert len(words) == 6 and set(words) <= {"a", "red", "square", "square."}
        counts = Counter(words)
        assert counts["a"] >= 1 and counts["red"] >= 1 and counts["square."] == 1
        originals = iter(words)  # the original words keep their order
        assert all(word in originals for word in ["a", "red", "square."])


def test_synonyms_file_is_merged_with_inline_table(tmp_path):
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps({"red": ["crimson"], "square": ["box"]}))
    augment = build(p_synonym=1.0, synonyms_file=str(path), synonyms={"square": ["block"]})
    assert caption(augment, "a red square") == "a crimson block"


def test_bad_synonyms_files_are_one_line_config_errors(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"red": ["crimson"')
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text(json.dumps({"red": "crimson"}))
    a_list = tmp_path / "list.json"
    a_list.write_text(json.dumps(["red", "crimson"]))
    for path in [tmp_path / "missing.json", garbage, wrong_shape, a_list]:
        with pytest.raises(ConfigError) as err:
            build(synonyms_file=str(path))
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_probabilities_are_bounded():
    with pytest.raises(InvalidParams):
        build(p_delete=1.5)


def test_deterministic_and_independent_of_global_state():
    augment = AUGMENTERS.build("text", {"synonyms": {"red": ["crimson"], "small": ["little"]}}, seed=0)
    text = "a small red square at the top left of a large blue background"
    np.random.seed(1)
    random.seed(1)
    first = [caption(augment, text, seed) for seed in range(20)]
    np.random.seed(2)
    random.seed(2)
    again = [caption(augment, text, seed) for seed in range(20)]
    assert first == again
    assert len(set(first)) >= 10 and all(first)


def test_empty_caption_stays_empty():
    assert caption(build(p_delete=1.0, p_insert=1.0), "") == ""
