"""`vqa`: visual questions with their human answers, in the VQA v2 layout (a questions JSON, an
annotations JSON and an image directory, Goyal et al. 2017) or a simple CSV / JSON Lines form."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmreg.components import Dataset, Sample, Samples
from mmreg.errors import DataError
from mmreg.images import open_image
from mmreg_plugins.datasets.vqa_plugin import VqaSplitFiles


@dataclass(frozen=True)
class Question:
    image: Path
    question: str
    answers: tuple[str, ...]
    answer: str
    answer_type: str | None
    question_id: int


def _load_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"dataset 'vqa': cannot read the {what} {path} ({type(exc).__name__}); give a VQA v2 {what} JSON") from None


def _checked(answers: list[str], where: str) -> tuple[str, ...]:
    given = tuple(a.strip() for a in answers if a and a.strip())
    if not given:
        raise DataError(f"dataset 'vqa': {where} has no answers; give each question at least one answer, or leave it out")
    return given


def read_v2(files: VqaSplitFiles, pattern: str) -> list[Question]:
    """Questions joined to their annotations by ``question_id``; images named by ``pattern``."""
    if not (files.questions and files.annotations and files.images):
        raise DataError("dataset 'vqa': a VQA v2 split needs questions, annotations and images; or give file= a CSV/JSON Lines file")
    questions = _load_json(files.questions, "questions")
    try:
        annotations = {a["question_id"]: a for a in _load_json(files.annotations, "annotations")["annotations"]}
        questions["questions"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"dataset 'vqa': {files.questions} or {files.annotations} lacks {exc} in the VQA v2 layout; give the official files") from None
    subtype = questions.get("data_subtype", "")
    out = []
    for q in questions["questions"]:
        a = annotations.get(q["question_id"])
        if a is None:
            raise DataError(f"dataset 'vqa': question {q['question_id']} in {files.questions} has no annotation; give its answers in {files.annotations}")
        answers = _checked([x["answer"] for x in a.get("answers", [])], f"question {q['question_id']} in {files.annotations}")
        image = Path(files.images) / pattern.format(image_id=q["image_id"], data_subtype=subtype)
        out.append(Question(image, q["question"], answers, a.get("multiple_choice_answer", answers[0]), a.get("answer_type"), q["question_id"]))
    return out


def _json_lines(text: str, path: str) -> list[Any]:
    """One JSON value per non-empty line; a line that is not JSON (a file cut off mid-row) is a DataError naming it."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DataError(f"dataset 'vqa': {path} line {number} is not JSON ({exc.msg}); was the file cut off? fix or remove that line") from None
    return rows


def read_rows(path: str) -> list[Question]:
    """Rows of a CSV or JSON Lines file: image (relative to the file), question, answers, and
    optionally answer_type and question_id."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"dataset 'vqa': cannot read {path} ({type(exc).__name__}); give a CSV or JSON Lines file") from None
    rows = _json_lines(text, path) if file.suffix in (".jsonl", ".json") else list(csv.DictReader(text.splitlines()))
    out = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"dataset 'vqa': {path} row {i} is {type(row).__name__}, not an object; write one JSON object per line")
        missing = [c for c in ("image", "question", "answers") if c not in row]
        if missing:
            raise DataError(f"dataset 'vqa': {path} row {i} lacks {', '.join(missing)}; give image, question and answers")
        raw = row["answers"] if isinstance(row["answers"], list) else str(row["answers"]).split(";")
        answers = _checked(raw, f"{path} row {i}")
        try:
            qid = int(row["question_id"]) if row.get("question_id") not in (None, "") else i - 1
        except (TypeError, ValueError):
            raise DataError(f"dataset 'vqa': {path} row {i}: question_id {row['question_id']!r} is not a whole number; fix or leave it out") from None
        out.append(Question(file.parent / row["image"], row["question"], answers, answers[0], row.get("answer_type") or None, qid))
    return out


class VqaSplit(Samples):
    def __init__(self, questions: list[Question]) -> None:
        self.questions = questions

    def __len__(self) -> int:
        return len(self.questions)

    def where(self, index: int) -> str:
        q = self.questions[index]
        return f"question {q.question_id}: image {q.image}"

    def sample(self, index: int) -> Sample:
        q = self.questions[index]
        return Sample(open_image(q.image), q.question, question=q.question, answer=q.answer, answers=q.answers,
                      answer_type=q.answer_type, question_id=q.question_id)  # fmt: skip


class VqaDataset(Dataset):
    """Each sample: the image, its question (also as caption), every human answer, the answer
    type and the question id (for results files)."""

    fields = frozenset({"image", "caption", "question", "answer"})

    def __init__(self, *, train: dict[str, Any], val: dict[str, Any], file_pattern: str, seed: int) -> None:
        self._splits = {}
        for name, files in (("train", VqaSplitFiles(**train)), ("val", VqaSplitFiles(**val))):
            self._splits[name] = VqaSplit(read_rows(files.file) if files.file else read_v2(files, file_pattern))

    def split(self, name: str) -> VqaSplit:
        if name not in self._splits:
            raise DataError(f"dataset 'vqa' has no split '{name}' (splits: train, val)")
        return self._splits[name]

    def texts(self, name: str, field: str = "caption") -> list[str]:
        return [q.question if field in ("caption", "question") else q.answer for q in self.split(name).questions]

    def answers(self, name: str) -> list[tuple[str, ...]]:
        return [q.answers for q in self.split(name).questions]
