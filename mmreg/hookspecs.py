"""The extension points of mmreg: every technique enters through these hooks.

Each ``mmreg_register_<kind>`` hook is handed a ``register`` callable bound to
the plugin being loaded, so every registered component knows its origin::

    from mmreg import hookimpl

    @hookimpl
    def mmreg_register_fusions(register):
        register("gated", GatedFusion, params=GatedParams, help="joint attention + sigmoid gate")

The factory may also be given as a reference, ``"package.module:GatedFusion"``,
imported the first time a run builds it: a plugin module holding only its
hook, params and help then registers without importing torch, and ``mmreg list``
and ``mmreg show`` stay fast. The factory is called with the validated parameters as keyword arguments plus
the context keywords of its kind (listed on each hook below). Hooks are called
one plugin at a time; a hook that raises fails only its own plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

PROJECT = "mmreg"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callable each registration hook is handed."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        params: type | None = None,
        help: str = "",
    ) -> None:
        """Record ``factory`` under ``name``.

        ``factory`` is a callable or a lazy reference ``"package.module:attr"``
        (``attr`` may be dotted: ``"pkg.clip:ClipEncoder.create"``), imported on
        first build; one that fails to import is reported then, naming the plugin.

        ``params`` is a pydantic model class whose fields (types, defaults,
        ``Field(description=...)``) are the component's parameters; ``None``
        means it takes none. ``help`` is one line shown by ``mmreg list``.
        """


@hookspec
def mmreg_register_encoders(register: Register) -> None:
    """Register image+text encoders.

    Factory: ``factory(**params, captions: Sequence[str]) -> mmreg.components.Encoder``.
    An encoder whose towers are separable declares them in ``towers()`` (see
    ``mmreg_register_peft_strategies``) and writes them in their libraries' own
    formats in ``export(directory)``.
    ``captions`` are the training split's texts the model will read (captions,
    or questions for VQA), for encoders that build a vocabulary; an encoder
    with its own tokenizer ignores them. A factory may carry
    ``gives_tokens = False`` (a class attribute) when the encoder gives only
    pooled vectors, so token-reading fusions are refused before it is built.
    A single-stream encoder, one transformer over patches and tokens together
    (ViLT; a VisualBERT-like model), carries ``single_stream = True``: it gives
    its own fusion in ``joint_fusion()`` (``fuse`` and the pairwise ``score``
    from the model), its batch image tensors in ``pixel_inputs`` (``pixel_mask``
    where it pads), and optionally a fine-tuned ``answer_head()``; any chosen
    fusion other than ``none`` is refused before it is built (see
    ``mmreg.components.Encoder.single_stream``). An encoder may give its
    resized, cropped pixels as uint8 in ``pixel_inputs_uint8`` (normalised on
    the device with its ``image_normalization``; ``mmreg.testing.check_encoder``
    checks they equal ``pixel_inputs``). An encoder that conditions a language
    model on image queries (BLIP-2) carries ``conditions_language_model = True``
    and implements ``language_inputs``, ``language_logits`` and ``generate_text``
    (``mmreg.components.Encoder.conditions_language_model``); tasks that write text
    train and generate through them.
    """


@hookspec
def mmreg_register_fusions(register: Register) -> None:
    """Register fusion heads.

    Factory: ``factory(**params, dim: int) -> mmreg.components.Fusion``, where
    ``dim`` is the shared width both modalities are projected to. A fusion
    defines ``score`` (pairwise [N, M] logits) and ``fuse`` ([N, D] joint features).
    """


@hookspec
def mmreg_register_losses(register: Register) -> None:
    """Register training objectives.

    Factory: ``factory(**params) -> mmreg.components.Loss``. A loss declares in
    ``needs`` the ``Step`` fields it reads: ``"scores"`` (pairwise fusion scores),
    ``"logits"`` and ``"labels"`` (task head), ``"views"`` (two augmented views,
    made by an augmenter declaring ``gives_views = True``), ``"logit_scale"`` (the
    encoder's own scale, from an encoder declaring ``gives_logit_scale = True``),
    ``"pairs"`` (a pairwise fusion's scorer of the pairs the loss picks, hard negatives
    drawn from the contrastive similarities: ``mmreg.components.Pairs``; ``"scores"`` is
    then the cosine of the contrastive pooled vectors). Losses reading ``"scores"``,
    ``"pairs"`` or ``"views"`` compare samples across the batch: under ``train.grad_accum``
    they see the whole accumulated batch (``mmreg.accumulate``). A contrastive loss declaring ``sharded = True`` reads, under data parallelism,
    only this process's rows of the global scores (``Step.scores`` [b, B] and
    ``Step.offset``); any other gets the whole matrix (see ``mmreg.components.Loss``).
    A loss unchanged when images and texts swap (``scores.T``) may declare
    ``symmetric = True``; ``mmreg.testing.check_loss`` holds it to that.
    """


@hookspec
def mmreg_register_augmenters(register: Register) -> None:
    """Register training-split augmenters.

    Factory: ``factory(**params, seed: int) -> mmreg.components.Augmenter``; it maps
    a training ``Sample`` to a ``Sample``. One that sets ``views`` (two augmented
    views, for losses reading ``"views"``) declares ``gives_views = True``.
    """


@hookspec
def mmreg_register_peft_strategies(register: Register) -> None:
    """Register parameter-efficient fine-tuning strategies.

    Factory: ``factory(**params, strategies: Registry) -> mmreg.components.PeftStrategy``;
    its ``apply(encoder)`` decides which encoder weights train, and as a
    ``LoopCallback`` it may change that during the run. ``strategies`` is this
    registry, for a strategy that runs over another one
    (``strategies.build(name, params, strategies=strategies)``); others ignore it.

    Strategies act on towers, not on an encoder's insides: an encoder declares
    ``towers()`` -> ``{"vision": Tower(path, targets), "text": ...}`` (and
    ``"bridge"``: what links image to language model, BLIP-2's Q-Former), where
    ``path`` is the attribute path to the tower module and ``targets`` the module
    names a LoRA-style method adapts by default (``q_proj``/``v_proj`` in
    transformers' CLIP, ``qkv`` in a timm ViT). Per-tower learning rates
    (``optim.lr.vision``) read the same declaration.
    """


@hookspec
def mmreg_register_datasets(register: Register) -> None:
    """Register image-caption datasets.

    Factory: ``factory(**params, seed: int) -> mmreg.components.Dataset``.
    Open image files with ``mmreg.images.open_image`` (EXIF orientation, first
    frame, whole file decoded) and return them in their own mode: the core makes
    every sample's image RGB with ``mmreg.images.to_rgb`` (16-bit scaled,
    transparency composited onto ``data.background``) before augmentation.
    ``check(split)`` finds unusable samples before training (file and row);
    for splits above ``data.full_check_max`` the core calls the cheaper
    ``check_headers(split)`` instead, and ``Samples.where(index)`` names a sample
    that fails to decode while loading (``mmreg.badimages``).
    """


@hookspec
def mmreg_register_tasks(register: Register) -> None:
    """Register tasks: what a run trains for and how it is scored.

    Factory: ``factory(**params, settings: mmreg.config.EvalConfig) -> mmreg.components.Task``
    (``settings``: the generation settings of the experiment's ``eval`` section). The class declares the
    sample field fed as text (``text``), the dataset fields it reads
    (``needs_fields``), the ``Step`` fields its head gives the losses (``provides``:
    ``"logits"``, ``"labels"``, ``"token_logits"``) and whether it reads the encoder's
    image tokens (``needs_image_tokens``), so impossible combinations are refused
    before anything is built. The instance builds its head from the fused width
    and the training split (``build_head``), collates its targets (``targets``),
    fills the ``Step`` (``forward``) and yields its metrics from the one
    validation pass (``evaluations``).
    """


@hookspec
def mmreg_register_balancers(register: Register) -> None:
    """Register balancers: gradient hooks between the backward pass and the optimizer step.

    Factory: ``factory(**params) -> mmreg.components.Balancer``. The core calls it once per
    optimizer step, after gradients are reduced across processes and, with ``train.grad_accum``,
    after the last micro-batch; before clipping and the step (``mmreg.components.GradientStep``:
    the step's outputs without gradients, each modality's own weights, every part's weights, the
    step and epoch, a generator seeded per step). It may rescale or replace ``.grad`` (same shape
    and dtype) and returns numbers logged as ``balance/NAME/KEY``. One reading each modality's
    own logits declares ``needs_unimodal = True``: only fusions declaring ``gives_unimodal`` serve
    it, and others are refused before anything is built. An experiment stacks them in order
    (``[balance.NAME]`` tables, ``--balance NAME``).
    """
