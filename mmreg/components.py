"""The interfaces each kind of component implements; the core composes only these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, overload

import torch
from torch import nn

from .modality import Modality as Modality  # re-exported from its low-level home

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .results import Metric


@dataclass(frozen=True)
class Tower:
    """Where one modality's tower sits in an encoder, for PEFT strategies and per-tower learning rates.

    ``path`` is the dotted attribute path from the encoder to the tower module
    (``"model.vision_model"``); ``targets`` are the names of the sub-modules a
    LoRA-style method adapts by default (``("q_proj", "v_proj")`` for
    transformers' CLIP, ``("qkv",)`` for a timm ViT). Weights outside every
    tower (projections, a logit scale) are not part of any tower.
    """

    path: str
    targets: tuple[str, ...]

    def module(self, encoder: nn.Module) -> nn.Module:
        """The tower module as the encoder holds it now (possibly wrapped by peft)."""
        return self.module_at(encoder, self.path)

    def replace(self, encoder: nn.Module, new: nn.Module) -> None:
        """Put ``new`` (a peft-wrapped or merged tower) where the tower was."""
        parent, _, name = self.path.rpartition(".")
        setattr(self.module_at(encoder, parent), name, new)

    @staticmethod
    def module_at(encoder: nn.Module, path: str) -> nn.Module:
        module = encoder
        for part in filter(None, path.split(".")):
            module = getattr(module, part)
        return module


class Encoder(nn.Module):
    """Turns images and captions into features, and owns their preprocessing.

    Subclasses set the four ``*_dim`` attributes and ``gives_tokens``; the model
    projects whatever widths they give to the shared width. ``towers()`` names
    the vision and text towers so PEFT strategies and parameter groups work on
    any encoder; ``export(directory)`` hands the trained towers back to their
    own libraries.
    """

    gives_tokens: bool = True
    image_token_dim: int
    image_pooled_dim: int
    text_token_dim: int
    text_pooled_dim: int
    # Where the encoder uses a transformers tokenizer, setting these lets the core
    # report text that does not fit (``token_ids``) and show tokens as text (``decode``).
    tokenizer: Any = None
    max_length: int | None = None  # tokens kept per text; longer texts are truncated
    max_length_setting: str | None = None  # the setting that raises max_length, where it can be raised

    # A single-stream encoder (ViLT; a VisualBERT-like model) fuses image and text inside itself:
    # it implements ``joint_fusion`` instead of ``encode_images``/``encode_texts``. The model then
    # projects nothing and hands the fusion the raw inputs, images as ``Modality(tokens=pixel_values
    # [N, 3, H, W], mask=pixel_mask [N, H, W])`` and texts as ``Modality(tokens=input_ids [N, L],
    # mask=attention_mask)``; a separate fusion is refused before any weight is built.
    single_stream: ClassVar[bool] = False
    # The pooled image and text vectors live in one embedding space, trained contrastively (CLIP's
    # image and text embeddings): their cosine can shortlist candidates for any fusion (eval.shortlist).
    shared_space: ClassVar[bool] = False
    # A generative encoder that conditions a language model on image queries (BLIP-2; an InstructBLIP-like
    # model): ``encode_images`` gives the image as embeddings in the language model's input space (tokens
    # [N, Q, D_lm]), and a task that writes text reaches the language model through ``language_inputs``,
    # ``language_logits`` and ``generate_text``. The model projects nothing and hands a task the raw text;
    # only fusion "none" and losses on the written text ("token_logits") fit it, refused otherwise before
    # any weight is built.
    conditions_language_model: ClassVar[bool] = False

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> ``pixel_values`` [N, 3, H, W], as this encoder expects them."""
        raise NotImplementedError

    def pixel_inputs(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """The batch's image tensors: ``pixel_values``, plus ``pixel_mask`` [N, H, W] (1 at real
        pixels) for an encoder that pads images of different sizes into one batch (ViLT)."""
        return {"pixel_values": self.preprocess(images)}

    def pixel_inputs_uint8(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor] | None:
        """``pixel_inputs`` before rescaling and normalisation: ``pixel_values`` uint8 [N, 3, H, W]
        (0-255, resized and cropped as ``pixel_inputs``), so DataLoader workers send a quarter of
        the bytes and the device normalises with ``image_normalization`` (``mmreg.pixels``); the
        result must equal ``pixel_inputs``. None (the default): this encoder gives float pixels only."""
        return None

    def joint_fusion(self) -> Fusion:
        """A single-stream encoder's own fusion: ``fuse`` runs the model on matched pairs, ``score``
        rates every pair (image-text matching); see ``single_stream``."""
        raise NotImplementedError

    def answer_head(self) -> tuple[nn.Module, list[str]] | None:
        """A fine-tuned checkpoint's answer classifier over the fused width and its answers, in
        logit order (ViLT's ``classifier`` and ``id2label``), for a question-answering task to
        start from; None where the checkpoint has none."""
        return None

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Captions -> ``{"input_ids", "attention_mask"}``, padded to the batch's longest."""
        raise NotImplementedError

    def language_inputs(self, prompts: Sequence[str], targets: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """A language-model-conditioning encoder's batch tensors (keys ``lm_*``) for N prompts and, when
        training, the N texts written after them; without ``targets``, what ``generate_text`` continues.
        See ``conditions_language_model``; runs in DataLoader workers."""
        raise NotImplementedError

    def language_logits(self, image: Modality, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits [N, L, V] of the language model given the image (``encode_images``) and a
        batch of ``language_inputs``, and the token each position predicts [N, L] (-100: not scored)."""
        raise NotImplementedError

    def generate_text(self, image: Modality, batch: Mapping[str, torch.Tensor], *, num_beams: int, max_new_tokens: int) -> list[str]:
        """What the language model writes after each prompt of a batch of ``language_inputs`` without
        targets, given the image: beam search of ``num_beams`` (1: greedy), at most ``max_new_tokens``."""
        raise NotImplementedError

    def image_normalization(self) -> tuple[list[float], list[float]] | None:
        """The per-channel (mean, std) ``preprocess`` normalises with, on the 0-1 scale; None if unknown."""
        return None

    def token_ids(self, texts: Sequence[str]) -> list[list[int]] | None:
        """Each text's token ids before truncation, special tokens included; None without ``tokenizer``."""
        if self.tokenizer is None:
            return None
        return self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]

    def decode(self, input_ids: torch.Tensor) -> list[str] | None:
        """[N, L] token ids back to text, as the model reads it (special tokens dropped); None without ``tokenizer``."""
        if self.tokenizer is None:
            return None
        return self.tokenizer.batch_decode(input_ids.tolist(), skip_special_tokens=True)

    def use(self, *, tokens: bool, pooled: bool) -> None:
        """Called once by the model with the outputs it will read.

        Freeze (``requires_grad_(False)``) the weights that only feed outputs
        nobody reads (a pooled-vector projection when the fusion reads tokens),
        so every trainable weight receives a gradient. ``encode_*`` may then
        leave the unread field as None.
        """

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        raise NotImplementedError

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        raise NotImplementedError

    def save_preprocessing(self, directory: Path) -> None:
        """Write the tokenizer and image processor so a run can be reloaded exactly."""

    def towers(self) -> dict[str, Tower]:
        """``{"vision": Tower(...), "text": Tower(...)}``: the encoder's towers and their
        default LoRA targets. An encoder without separable towers returns ``{}``
        and works only with strategies that need none (``full``)."""
        return {}

    def export(self, directory: Path) -> None:
        """Write the towers in their own libraries' formats (transformers
        ``save_pretrained``, timm weights + config), loadable without mmreg.
        Adapters are already merged when this is called. Raise ConfigError if
        the encoder cannot be exported."""
        raise NotImplementedError


class Fusion(nn.Module):
    """Relates the two modalities, both already projected to the shared width.

    ``score(image, text)`` -> [N, M] matching logits for every image-text pair;
    ``fuse(image, text)`` -> [N, D] joint features of the N matched pairs.
    """

    needs_tokens: ClassVar[bool] = False  # reads token sequences; else pooled vectors
    out_dim: int
    # Where fuse()'s first ``image_width`` values are the normalised pooled image embedding (`none`),
    # a head can be set from text embeddings (a zero-shot classifier); None where fuse mixes them.
    image_width: int | None = None
    # That ``fuse`` with one modality's pooled vectors zeroed is that modality alone, so a head over
    # it gives unimodal logits (``Step.unimodal``: OGM-GE's split of a concatenation head). True for
    # fusions over pooled vectors that enter separately (`none`, `concat`); False where a modality
    # only weighs or attends to the other (a gate, cross-attention).
    gives_unimodal: ClassVar[bool] = False

    def use(self, *, score: bool, fuse: bool) -> None:
        """Called once by the model: which of ``score`` and ``fuse`` training reads.

        Freeze weights that serve only the unread one (see ``Encoder.use``).
        """

    def score(self, image: Modality, text: Modality) -> torch.Tensor:
        raise NotImplementedError

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        raise NotImplementedError


class PairwiseFusion(Fusion):
    """A fusion that scores a pair by ``match_head(fuse(image_i, text_j))``.

    Scoring N images against M texts runs ``fuse`` over all N*M pairs, in chunks
    of ``pair_chunk`` pairs so evaluation over a large set fits in memory.
    """

    match_head: nn.Module
    pair_chunk: int = 4096
    # While K micro-batches train as one batch (``mmreg.accumulate``), K: the pairs of a call are scored
    # in at least K chunks, each checkpointed (its activations recomputed in backward), so the fusion
    # over the whole batch holds about 1/K of its activations at once; 0 otherwise.
    recompute: int = 0

    def use(self, *, score: bool, fuse: bool) -> None:
        self.match_head.requires_grad_(score)

    def score(self, image: Modality, text: Modality) -> torch.Tensor:
        n, m = len(image), len(text)
        device = image.device
        rows = torch.arange(n, device=device).repeat_interleave(m)
        cols = torch.arange(m, device=device).repeat(n)
        return self.score_pairs(image, text, rows, cols).reshape(n, m)

    def score_pairs(self, image: Modality, text: Modality, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """[P] matching logits of the pairs (image ``rows[p]``, text ``cols[p]``), ``pair_chunk`` at a time
        (and in ``recompute`` checkpointed chunks where set)."""

        def logits(chunk_rows: torch.Tensor, chunk_cols: torch.Tensor) -> torch.Tensor:
            return self.match_head(self.fuse(image.index(chunk_rows), text.index(chunk_cols)))

        chunk, checkpointed = self.pair_chunk, self.recompute > 1 and torch.is_grad_enabled()
        if checkpointed:
            from torch.utils.checkpoint import checkpoint

            chunk = max(1, min(chunk, -(-len(rows) // self.recompute)))
        out = [
            checkpoint(logits, rows[s : s + chunk], cols[s : s + chunk], use_reentrant=False) if checkpointed else logits(rows[s : s + chunk], cols[s : s + chunk])
            for s in range(0, len(rows), chunk)
        ]
        return torch.cat(out).reshape(-1)


@dataclass
class Pairs:
    """A pairwise fusion's matching over one batch, for a loss that chooses which pairs the fusion
    scores (image-text matching on hard negatives drawn from the contrastive similarities: ALBEF,
    Li et al. 2021; BLIP). Filled where a loss ``needs`` "pairs"; ``Step.scores`` is then the
    cosine of the contrastive pooled vectors, not the fusion's score of every pair.

    Shapes: B pairs in the global batch (every process's, in rank order under data parallelism);
    this process's own pairs are ``offset`` .. ``offset + rows - 1`` (all B alone).
    """

    image: Modality  # [B] every image as the fusion reads it (tokens or pooled), with gradients
    text: Modality  # [B] every caption likewise
    similarity: torch.Tensor  # [B, B] cosine of the contrastive pooled vectors, image rows, caption columns; no gradient
    matches: torch.Tensor  # [B, B] bool: True where the caption describes the image (the diagonal, captions of one image)
    offset: int
    rows: int
    fusion: PairwiseFusion

    def score(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """[P] the fusion's matching logits of the pairs (image ``rows[p]``, caption ``cols[p]``), global indices."""
        return self.fusion.score_pairs(self.image, self.text, rows, cols)


@dataclass
class Step:
    """What one forward pass produced, for the losses to read.

    A loss names in ``needs`` the fields it reads; the model fills only those.

    Under data parallelism ``scores`` covers the global batch of B = b * P pairs. When every
    loss reading it declares ``Loss.sharded``, each process gets only its own rows, [b, B]
    (its images against every process's texts), and ``offset`` says where its pairs sit:
    its pair i is matched at column ``offset + i``. Otherwise (one process, or a loss that
    is not sharded) ``scores`` is the whole [B, B] matrix and ``offset`` is None.
    """

    image: Modality
    text: Modality
    scores: torch.Tensor | None = None  # [N, M] "scores": matched pairs on the diagonal; [b, B] rows when sharded
    offset: int | None = None  # sharded scores: the global index of this process's first pair
    logits: torch.Tensor | None = None  # [N, C] "logits": task-head outputs
    labels: torch.Tensor | None = None  # [N] "labels"
    token_logits: torch.Tensor | None = None  # [N, L, V] "token_logits": a text decoder's next-token logits
    token_labels: torch.Tensor | None = None  # [N, L] the next token at each position, -100 where none is scored
    views: tuple[Modality, Modality] | None = None  # "views": two augmented views of each image, encoded
    logit_scale: torch.Tensor | None = None  # "logit_scale": the encoder's own learnable scale (CLIP's)
    pairs: Pairs | None = None  # "pairs": the fusion scores the pairs a loss picks (hard negatives); see Pairs
    # {"image": [N, C], "text": [N, C]}: each modality's own logits (``MultimodalModel.unimodal_logits``),
    # filled where a balancer reads them (``Balancer.needs_unimodal``)
    unimodal: dict[str, torch.Tensor] | None = None


class Loss(nn.Module):
    """A training objective; ``needs`` names the ``Step`` fields it reads.

    ``sharded = True`` declares that, under data parallelism, the loss reads only this
    process's rows of the global score matrix (``Step.scores`` [b, B] with ``Step.offset``;
    ``mmreg.layers.symmetric_infonce`` and ``mmreg.distributed.column_logsumexp`` give the
    column terms), so each of P processes scores 1/P of the pairs. Each process's loss is
    then its share: the mean over processes, which DDP's gradient averaging takes, is the
    loss of the global batch. A loss that does not declare it gets the whole [B, B] matrix,
    which every process computes in full.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"scores"})
    sharded: ClassVar[bool] = False
    # A claim that swapping images and texts (``scores.T``) leaves the loss unchanged; mmreg.testing checks it.
    symmetric: ClassVar[bool] = False

    def forward(self, step: Step) -> torch.Tensor:
        raise NotImplementedError


class Augmenter:
    """Changes a training sample (``dataclasses.replace`` the fields it alters);
    never applied to validation data.

    ``rng`` is seeded per sample and epoch by the caller, so runs repeat exactly.
    An augmenter that makes two views of the image sets ``views`` on every sample
    and declares ``gives_views = True``.
    """

    gives_views: ClassVar[bool] = False

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        raise NotImplementedError


@dataclass
class GradientStep:
    """What a balancer (``Balancer``) sees of one optimizer step, after the backward pass, the reduction
    of gradients across processes and the last micro-batch, before clipping and the optimizer step.

    ``outputs`` is the step's ``Step`` without gradients over the whole step: every micro-batch's
    rows concatenated and, under data parallelism, every process's rows gathered, so every process
    computes the same modulation. Its ``logits`` [N, C] and ``labels`` [N] are the task head's,
    ``unimodal`` each modality's own logits where the balancer declares ``needs_unimodal``.
    ``modalities`` names the trainable weights that serve one modality alone ("image": the vision
    tower and its projections, "text": the text tower and its), ``groups`` every trainable weight
    by part (``mmreg.optim.named_by_group``: vision, text, fusion, head); each weight's ``.grad`` may
    be rescaled in place or replaced by a tensor of its shape and dtype. Gradients are unscaled
    (fp16's loss scale removed). ``generator`` is seeded by the run's seed and the step, the same on
    every process and on resume: draw noise from it, not from the global generator.
    """

    outputs: Step
    modalities: dict[str, list[tuple[str, nn.Parameter]]]
    groups: dict[str, list[tuple[str, nn.Parameter]]]
    step: int  # the optimizer step being taken, from 0
    epoch: int  # the epoch it belongs to, from 0
    steps_per_epoch: int
    generator: torch.Generator


class Balancer:
    """A gradient hook between backward and the optimizer step (OGM-GE, AGM, PMR-like methods of
    modality balance; the kind ``balancers``, section ``[balance]``, flag ``--balance``).

    Called once per optimizer step with a ``GradientStep``; it may rescale or replace gradients
    and returns numbers (floats or 0-dim tensors, converted only on logged steps) logged with the
    step as ``balance/NAME/KEY``. Several are applied in the order the experiment lists them.
    ``needs_unimodal`` declares that it reads ``outputs.unimodal``: a fusion that cannot give them
    (``Fusion.gives_unimodal``) is refused before anything is built.
    """

    needs_unimodal: ClassVar[bool] = False

    def __call__(self, step: GradientStep) -> Mapping[str, float | torch.Tensor]:
        raise NotImplementedError


class LoopCallback:
    """Code run around the training loop, never inside its branches.

    ``on_train_start`` is called once the step budget is known (raise
    ConfigError for a setting the budget makes impossible); ``on_step_start``
    before the first micro-batch of each optimizer step, ``step`` counting the
    steps already taken. Both must depend only on their arguments, so a resumed
    run behaves exactly as an uninterrupted one.
    """

    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        """Called once, before the first step, with the run's step budget."""

    def on_metric(self, metric: Metric) -> None:
        """Called once, before the first step, with the metric that decides the run and its
        direction (``mmreg.results.Metric``: the task's headline, or ``train.metric``)."""

    def on_step_start(self, step: int) -> None:
        """Called before each optimizer step."""

    def on_eval(self, step: int, metrics: dict[str, float], run_dir: Path) -> None:
        """Called after each evaluation with the validation metrics (what ``mmreg.metrics`` computes)
        and the run directory; raising stops the run (a search trial's pruner raises optuna.TrialPruned)."""

    def on_log(self, record: dict[str, Any]) -> None:
        """Called on the main process with each record as it is appended to metrics.jsonl
        (``step``, ``split``, then numbers such as ``loss`` or ``recall@1``); trackers log it."""


class PeftStrategy(LoopCallback):
    """Decides which encoder weights train (all, adapters only, a tower frozen for a while).

    ``apply(encoder)`` is called once the model is composed (after
    ``Encoder.use``); it freezes weights or wraps towers (``encoder.towers()``)
    with peft and returns the encoder. As a ``LoopCallback`` a strategy may
    change what trains during the run; the optimizer holds every weight that
    was trainable after ``apply``.
    """

    def apply(self, encoder: Encoder) -> Encoder:
        raise NotImplementedError


@dataclass(frozen=True)
class Sample:
    """One example: an image, its caption, and where the dataset has them a class
    label and a question with its answer (for visual question answering).

    ``image`` may be in any PIL mode: the core turns it into RGB as a viewer shows
    it (``mmreg.images.to_rgb``: 16-bit scaled, transparency composited onto
    ``data.background``) before augmentation. Open files with
    ``mmreg.images.open_image``, which applies the EXIF orientation.
    """

    image: Image.Image
    caption: str
    label: int | None = None
    question: str | None = None
    answer: str | None = None
    views: tuple[Image.Image, Image.Image] | None = None
    answers: tuple[str, ...] | None = None  # every human answer (VQA v2 has ten); None: just ``answer``
    answer_type: str | None = None  # VQA's "yes/no", "number", "other"; accuracy is reported per type
    question_id: int | None = None  # the data set's id of the question, for results files
    image_id: str | None = None  # rows sharing it are captions of one image (Flickr30k, COCO); None: the row's own image

    def human_answers(self) -> tuple[str, ...]:
        """The human answers to ``question``: ``answers``, else ``answer`` alone, else none."""
        if self.answers is not None:
            return self.answers
        return () if self.answer is None else (self.answer,)


class Samples(Sequence[Sample]):
    """A split whose samples are made on access: subclasses give ``__len__`` and
    ``sample(index)``; indexing (negative, slices, bounds) is handled here."""

    def sample(self, index: int) -> Sample:
        raise NotImplementedError

    def where(self, index: int) -> str:
        """Names sample ``index`` in messages ("train.csv row 3", a file path)."""
        return f"sample {index}"

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        size = len(self)
        if isinstance(index, slice):
            return [self.sample(i) for i in range(*index.indices(size))]
        if not -size <= index < size:
            raise IndexError(index)
        return self.sample(index % size)


class Dataset:
    """A source of image-caption samples, split into ``train`` and ``val``.

    ``fields`` lists what each sample carries ({"image", "caption"} at least, plus
    "label" when ``classes`` is set, "question", "answer" for VQA, "image_id" where
    captions are grouped by image), so impossible combinations are refused early. Declared on the class it is what
    the dataset can carry at most (checked before anything is built); on the
    instance, what these parameters give (checked again once it is built).
    """

    fields: frozenset[str] = frozenset({"image", "caption"})
    classes: list[str] | None = None

    def split(self, name: str) -> Sequence[Sample]:
        """The samples of split ``name`` ("train" or "val"); raise DataError if absent. Data read
        in order from shards returns a ``mmreg.streams.IterableSamples`` instead."""
        raise NotImplementedError

    def check(self, name: str) -> list[tuple[int, str]]:
        """(index, problem) for each sample of a split that cannot be used, found
        before training. The default makes every sample and its RGB image
        (``mmreg.images.to_rgb``); file-backed datasets override it with a check
        that names the file and row."""
        from .images import to_rgb

        split, bad = self.split(name), []
        for i in range(len(split)):
            try:
                to_rgb(split[i].image)
            except Exception as exc:  # any failure to produce a sample makes it unusable
                bad.append((i, f"{type(exc).__name__}: {exc}"))
        return bad

    def check_headers(self, name: str) -> list[tuple[int, str]]:
        """The cheap check of a split too large to decode before training (``data.full_check_max``):
        what can be found without decoding (a missing file, an unreadable header), as (index,
        problem). The default finds nothing; samples that fail to decode while training are then
        skipped, counted and capped (``mmreg.badimages``). File-backed datasets read headers in
        parallel (``mmreg.badimages.header_problem``, ``parallel_map``)."""
        return []

    def texts(self, name: str, field: str = "caption") -> list[str]:
        """One text field ("caption", "question", "answer") of a split; override when
        texts are cheaper to get than whole samples (they build vocabularies)."""
        return [getattr(sample, field) for sample in self.split(name)]

    def image_ids(self, name: str) -> list[str | None]:
        """Each sample's ``image_id`` in a split (captions of one image share it; training groups
        captions by image with them). The default reads every sample where ``fields`` declares
        "image_id", else gives None for each; override when ids are cheaper than whole samples."""
        split = self.split(name)
        if "image_id" not in self.fields:
            return [None] * len(split)
        return [sample.image_id for sample in split]

    def answers(self, name: str) -> list[tuple[str, ...]]:
        """Each question's human answers in a split (``Sample.human_answers``); override
        when they are cheaper to get than whole samples (they build the answer vocabulary)."""
        return [sample.human_answers() for sample in self.split(name)]


@dataclass
class Encoded:
    """One batch as the model encoded it: ``image`` and ``text`` projected to the shared
    width (what the fusion reads), and ``image_tokens`` the encoder's own image tokens
    [N, L, D_enc] where a task reads them (a text decoder attending to the image)."""

    image: Modality
    text: Modality
    image_tokens: Modality | None = None
    # Pooled image, text vectors [N, D] in one contrastive space: the encoder's own where ``Encoder.shared_space``,
    # else the model's contrastive projections where a loss reads "pairs"; None where there is no such space.
    pooled: tuple[torch.Tensor, torch.Tensor] | None = None


class Evaluation:
    """Accumulates metrics over the one validation pass; the model encodes each batch once
    and every evaluation reads the same features.

    ``names`` are the metric keys ``compute`` returns, known before any batch is seen,
    so a run refuses a ``train.metric`` it will not compute before anything is written.
    """

    names: tuple[str, ...] = ()

    def update(self, model: ModelView, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class ModelView(Protocol):
    """What a task (its ``forward``, evaluations and ``predict``) may use of the model it is handed.

    Everything else of ``mmreg.model.MultimodalModel`` is internal. Shapes: N images, M texts,
    L tokens, D the shared width.

    - ``encoder.tokenize(texts)`` -> ``{"input_ids", "attention_mask"}`` [M, L]: texts that are not
      in the batch (zero-shot prompts, candidate captions, questions); ``encoder.pixel_inputs(images)``
      -> the batch's image tensors of PIL images.
    - ``encode_images(pixel_values)`` [N, 3, H, W] -> ``Modality`` projected to the shared width;
      ``encode_texts(input_ids, attention_mask)`` -> ``Modality`` likewise. Pixels here are float and
      normalised (``encode`` and ``step`` normalise the uint8 pixels of a batch themselves).
    - ``encode(batch)`` -> ``Encoded``: a whole collated batch, both modalities and (where the task
      reads them) the encoder's image tokens.
    - ``fusion.score(image, text)`` -> [N, M] matching logits; ``fusion.fuse(image, text)`` -> [N, D].
    - ``head``: the module ``Task.build_head`` returned (None without one).
    - ``needs``: the ``Step`` fields the chosen losses read ("scores": a loss trains ``score``).
    - ``device``: where the weights are; move tensors made outside the batch there.

    A batch (``dict[str, Tensor]``) holds ``pixel_values`` [N, 3, H, W] (uint8 or float),
    ``input_ids`` and ``attention_mask`` [N, L] of the task's ``text`` field, ``pixel_mask`` for
    encoders that pad images, and every tensor the task's ``targets()`` added, row for row.
    """

    encoder: Encoder
    fusion: Fusion
    head: nn.Module | None
    needs: frozenset[str]

    @property
    def device(self) -> torch.device: ...

    def encode_images(self, pixel_values: torch.Tensor) -> Modality: ...

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality: ...

    def encode(self, batch: Mapping[str, torch.Tensor]) -> Encoded: ...


class Task:
    """What a run trains for: the text it reads, the target it predicts, its head, its metrics.

    Declared on the class, so a combination that cannot work is refused before anything
    is built: ``text`` is the sample field fed as text; ``target`` the field predicted (None:
    none); ``needs_fields`` the dataset fields it reads; ``provides`` the ``Step`` fields it
    fills for the losses ("logits", "labels", "token_logits"); ``reads_fused`` that its head
    reads the fusion's ``fuse``; ``needs_image_tokens`` that it reads the encoder's image tokens
    (refused on an encoder giving only pooled vectors).

    A task's own settings are the parameters it registered (``register(..., params=Schema)``):
    ``[task]`` in an experiment holds its ``name`` and them, ``--set task.NAME=VALUE`` reaches them,
    and the factory is called with them as keyword arguments beside the core's ``settings``.

    The task declares its results: ``headline`` names the metric that decides (the best
    checkpoint, early stopping, a search's objective and pruner, `mmreg runs list`), None for
    the first metric of the first evaluation; ``lower_is_better`` the metrics that are better
    lower. The user may name another (``train.metric``, ``mmreg search --metric``).
    """

    name: str = ""  # the registered name, set when the task is built
    text: ClassVar[str] = "caption"
    target: ClassVar[str | None] = None
    needs_fields: ClassVar[frozenset[str]] = frozenset({"image", "caption"})
    provides: ClassVar[frozenset[str]] = frozenset()
    reads_fused: ClassVar[bool] = False
    needs_image_tokens: ClassVar[bool] = False
    headline: ClassVar[str | None] = None
    # Every metric the task's evaluations may return (breakdowns ``NAME/GROUP`` aside), so a
    # ``train.metric`` or ``mmreg search --metric`` it never computes is refused before anything
    # is built; None: known only once the model is built (checked then).
    metric_names: ClassVar[tuple[str, ...] | None] = None
    # The ``Step`` field ("logits", "scores") for which this task is the default: a run naming no
    # task trains the task that claims what its losses read (``mmreg.tasks.choose_task``).
    default_for: ClassVar[str | None] = None
    benchmark: ClassVar[str | None] = None  # the task's name in CLIP_benchmark's results JSON (`mmreg eval --output`)
    # The metrics this task's evaluations may return where lower is better (a loss, a perplexity,
    # an error rate); every other one is better higher. Declared on the class, so `mmreg search`
    # knows the direction of its objective before any trial is built.
    lower_is_better: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, settings: Any = None) -> None:
        """``settings`` is the experiment's ``eval`` section (``mmreg.config.EvalConfig``: how much
        memory a block of scores may take). A task with parameters takes them as keyword
        arguments before it and passes ``settings`` on."""
        self.settings = settings
        self.classes: list[str] = []  # the head's classes or answers, saved as classes.json; empty for none

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module | None:
        """The head over ``width``-wide fused features, sized from the training split
        (classes, answer vocabulary, tokenizer); None for a task without one."""
        return None

    def initialise(self, model: ModelView) -> None:
        """Called once the model is composed (encoder, projections, fusion, this task's head), seeded,
        before any weight is loaded or trained: set the head from the model where the task can (a
        classifier's rows from its classes' text embeddings, ``classification``'s ``head_init``).
        Nothing by default."""

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """The batch tensors of the targets of ``samples`` (e.g. ``labels`` [N])."""
        return {}

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ``Step`` fields the head gives for a training batch (those in ``provides``)."""
        return {}

    def evaluations(self, model: ModelView) -> list[Evaluation]:
        """What the validation pass computes; ``headline`` (else the first metric of the first)
        decides which checkpoint is best."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """How the last evaluation computed its metrics, JSON-able (retrieval: images, captions,
        how pairs were scored, the chance level), kept in summary.json under the task's name and
        never read by the core; {} where there is nothing to add."""
        return {}

    def results(self, model: ModelView, samples: Sequence[Sample]) -> Any:
        """``mmreg eval --results``: the task's predictions for ``samples`` as JSON-able data in
        its own benchmark's results format (VQA's ``[{"question_id", "answer"}]``), written by the
        core as JSON. Raises ConfigError where the task has no results format (the default)."""
        from .errors import ConfigError

        raise ConfigError(f"task '{self.name}' has no results file format; leave out --results")

    def predict(self, model: ModelView, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """The task's prediction for each image (``pixels``: ``Encoder.pixel_inputs`` of N images),
        best first, at most ``top_k``: ``[{"<what>": ..., "score": float}]`` per image. ``texts`` are
        what the task reads beside the image (a question, a caption, candidate captions).
        Raises ConfigError where the task cannot predict or the texts do not fit it."""
        from .errors import ConfigError

        raise ConfigError(f"task '{self.name}' gives no predictions; use `mmreg eval` for its metrics")
