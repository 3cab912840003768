"""The tiny presets' tokenizer (`mmreg.text`): any text survives, and the same ids in every process."""

from __future__ import annotations

import subprocess
import sys

from mmreg.text import EOS, build_tokenizer

CAPTIONS = ["a big red circle on the left", "a small blue square at the top", "A green triangle, centre."]


def test_words_training_never_saw_are_spelled_not_lost():
    tok = build_tokenizer(CAPTIONS, 64)
    for text in ["a big red circle drawn by hand", "Ça — 日本 ☃ 🦜", "QUESTION: what colour?!"]:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True).strip() == text.lower()
    seen, unseen = tok("red", add_special_tokens=False)["input_ids"], tok("glowing", add_special_tokens=False)["input_ids"]
    assert len(seen) == 1 and len(unseen) > 1  # training words are one token, new ones a few pieces


def test_specials_come_first_and_eos_is_not_id_2():
    tok = build_tokenizer(CAPTIONS, 64)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(EOS) == tok.eos_token_id == 3  # CLIP pools at [EOS] only when its id is not 2
    ids = tok("a red circle")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_the_same_captions_give_the_same_ids_in_another_process():
    code = (
        "import hashlib, json, sys; from mmreg.text import build_tokenizer; "
        "t = build_tokenizer(json.loads(sys.argv[1]), 64); print(hashlib.sha1(t.backend_tokenizer.to_str().encode()).hexdigest())"
    )
    import json

    captions = [f"a {size} {colour} {kind} at the {where}" for size in ("big", "small") for colour in ("red", "blue", "green")
                for kind in ("circle", "square") for where in ("top", "left", "centre")]  # fmt: skip
    digests = {subprocess.run([sys.executable, "-c", code, json.dumps(captions)], capture_output=True, text=True, check=True).stdout for _ in range(3)}
    assert len(digests) == 1  # a resumed or evaluated run rebuilds exactly the ids it trained with

