"""VQA accuracy as the official VQA evaluation computes it (Antol et al. 2015; Goyal et al. 2017).

The formula: for a prediction and the human answers of a question, leave out each human answer
in turn, score ``min(1, #remaining answers equal to the prediction / 3)``, and average those
scores; a data set's accuracy is the mean over its questions, in [0, 1].

Answer normalisation follows the official script (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``) under its conditions:

- the prediction is always normalised: punctuation, then periods, then (lowercased, split on
  whitespace) number words to digits, articles dropped, contractions restored;
- the human answers get only the punctuation step, and only when they are not all identical
  (the official annotations are stored already normalised);
- the period step strips at most 32 periods (the script passes ``re.UNICODE``, 32, where
  ``re.sub`` takes its ``count``).

No maintained package implements this, hence this module: a helper of the `vqa` task plugin
(the leading underscore: a module with no entry point of its own), torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

ANSWER_TYPES = ("yes/no", "number", "other")  # VQA v2's answer types
NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())} | {"none": "0"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")  # the script's ``self.punct``
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as written in the official script (a lookahead, not a lookbehind)
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_PERIOD_COUNT = 32  # the script's re.UNICODE passed as re.sub's count

# The official contraction table: an answer word written without its apostrophe (left) is
# restored (right). Most right sides use the typographic apostrophe ’, a few the ASCII ', as there.
_Q = "’"
_CONTRACTIONS_RAW = (
    "aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't "
    "couldn'tve=couldn’t’ve couldnt’ve=couldn’t’ve didnt=didn’t doesnt=doesn’t dont=don’t hadnt=hadn’t "
    "hadnt’ve=hadn’t’ve hadn'tve=hadn’t’ve hasnt=hasn’t havent=haven’t hed=he’d hed’ve=he’d’ve "
    "he’dve=he’d’ve hes=he’s howd=how’d howll=how’ll hows=how’s Id’ve=I’d’ve I’dve=I’d’ve "
    "Im=I’m Ive=I’ve isnt=isn’t itd=it’d itd’ve=it’d’ve it’dve=it’d’ve itll=it’ll let’s=let’s "
    "maam=ma’am mightnt=mightn’t mightnt’ve=mightn’t’ve mightn’tve=mightn’t’ve mightve=might’ve "
    "mustnt=mustn’t mustve=must’ve neednt=needn’t notve=not’ve oclock=o’clock oughtnt=oughtn’t "
    "ow’s’at=’ow’s’at ’ows’at=’ow’s’at ’ow’sat=’ow’s’at shant=shan’t shed’ve=she’d’ve she’dve=she’d’ve "
    "she’s=she’s shouldve=should’ve shouldnt=shouldn’t shouldnt’ve=shouldn’t’ve shouldn’tve=shouldn’t’ve "
    "somebody’d=somebodyd somebodyd’ve=somebody’d’ve somebody’dve=somebody’d’ve somebodyll=somebody’ll "
    "somebodys=somebody’s someoned=someone’d someoned’ve=someone’d’ve someone’dve=someone’d’ve "
    "someonell=someone’ll someones=someone’s somethingd=something’d somethingd’ve=something’d’ve "
    "something’dve=something’d’ve somethingll=something’ll thats=that’s thered=there’d thered’ve=there’d’ve "
    "there’dve=there’d’ve therere=there’re theres=there’s theyd=they’d theyd’ve=they’d’ve "
    "they’dve=they’d’ve theyll=they’ll theyre=they’re theyve=they’ve twas=’twas wasnt=wasn’t "
    "wed’ve=we’d’ve we’dve=we’d’ve weve=we've werent=weren’t whatll=what’ll whatre=what’re "
    "whats=what’s whatve=what’ve whens=when’s whered=where’d wheres=where's whereve=where’ve "
    "whod=who’d whod’ve=who’d’ve who’dve=who’d’ve wholl=who’ll whos=who’s whove=who've whyll=why’ll "
    "whyre=why’re whys=why’s wont=won’t wouldve=would’ve wouldnt=wouldn’t wouldnt’ve=wouldn’t’ve "
    "wouldn’tve=wouldn’t’ve yall=y’all yall’ll=y’all’ll y’allll=y’all’ll yall’d’ve=y’all’d’ve "
    "y’alld’ve=y’all’d’ve y’all’dve=y’all’d’ve youd=you’d youd’ve=you’d’ve you’dve=you’d’ve "
    "youll=you’ll youre=you’re youve=you’ve"
)
CONTRACTIONS = dict(pair.split("=", 1) for pair in _CONTRACTIONS_RAW.split())


def strip_punctuation(text: str) -> str:
    """The official punctuation step: each mark is deleted where it touches a space (or the
    text has a digit-comma-digit), else replaced by a space; then periods not before a digit go."""
    out = text
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or _DIGIT_COMMA.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def normalise_words(text: str) -> str:
    """The official word step: lowercase, split on whitespace, number words to digits,
    articles dropped, contractions restored, joined by single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalise_answer(answer: str) -> str:
    """An answer as the official script normalises a prediction (and as VQA v2 stores its
    human answers): whitespace, punctuation and periods, then words."""
    return normalise_words(strip_punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy in [0, 1] of one ``prediction`` against a question's human ``answers``.

    Raises ValueError for a question without answers (the formula is undefined there).
    """
    if not answers:
        raise ValueError("a question without human answers has no VQA accuracy")
    predicted = normalise_answer(prediction)
    humans = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(humans)) > 1:
        humans = [strip_punctuation(a) for a in humans]
    matches = sum(a == predicted for a in humans)
    # leaving out answer i leaves matches - [answer i matches] matching answers
    return sum(min(1.0, (matches - (a == predicted)) / 3) for a in humans) / len(humans)


def answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """``vqa_accuracy``, except that a question with a single human answer scores exact match after
    normalisation (leave-one-out leaves nothing to count there). Raises ValueError without answers."""
    if len(answers) == 1:
        return float(normalise_answer(prediction) == normalise_answer(answers[0]))
    return vqa_accuracy(prediction, answers)


def soft_score(matches: int) -> float:
    """ViLT's soft target for an answer given by ``matches`` humans: 0, 0.3, 0.6, 0.9, 1 for
    0, 1, 2, 3, 4+ (Kim et al. 2021, after Teney et al. 2018); with ten answers, exactly the
    official accuracy of predicting that answer."""
    return (0.0, 0.3, 0.6, 0.9)[matches] if matches < 4 else 1.0


def accuracy_by_type(scores: Iterable[tuple[float, str | None]]) -> dict[str, float]:
    """Mean accuracy overall (``"vqa_accuracy"``) and per answer type (``"vqa_accuracy/<type>"``)
    from ``(accuracy, answer_type or None)`` pairs; a type's mean is over its questions' accuracies
    (the official script's per-type table averages the last leave-one-out score instead, a known slip)."""
    total: list[float] = []
    by_type: dict[str, list[float]] = {}
    for accuracy, kind in scores:
        total.append(accuracy)
        if kind:
            by_type.setdefault(kind, []).append(accuracy)
    out = {"vqa_accuracy": sum(total) / max(len(total), 1)}
    out.update({f"vqa_accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_type.items())})
    return out
