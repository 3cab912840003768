"""`vilt`: ViLT, the single-stream vision-and-language transformer (Kim et al. 2021; transformers'
``ViltModel``): image patches and text tokens go through one transformer, so it fuses inside
itself. A tiny random-init preset, or a saved/hub checkpoint with its task heads: the VQA
classifier of ``ViltForQuestionAnswering`` and the rank head of ``ViltForImageAndTextRetrieval``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreg.components import Modality, PairwiseFusion
from mmreg.hf_encoder import TransformersEncoder, loading_checkpoint
from mmreg.text import build_tokenizer
from mmreg_plugins.encoders.vilt_plugin import ViltParams


class ViltFusion(PairwiseFusion):
    """ViLT's own fusion: ``fuse`` runs the whole model on the matched pairs and gives its pooler
    output [N, hidden]; ``score`` is image-text matching, the rank head over each pair's pooled
    output (ViLT's retrieval). The model is held by the encoder, not registered twice here."""

    needs_tokens = True

    def __init__(self, encoder: ViltEncoder, rank_head: nn.Module) -> None:
        super().__init__()
        self.__dict__["encoder"] = encoder  # owned (and saved) by the encoder
        self.match_head, self.out_dim = rank_head, encoder.hidden_size

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        assert image.tokens is not None and text.tokens is not None and text.mask is not None
        out = self.encoder.model(
            input_ids=text.tokens, attention_mask=text.mask.long(), pixel_values=image.tokens,
            pixel_mask=None if image.mask is None else image.mask.long(),
        )  # fmt: skip
        return out.pooler_output


class ViltEncoder(TransformersEncoder):
    """Single-stream (``single_stream = True``): the model reads the batch's ``pixel_values`` and
    ``pixel_mask`` with the token ids (ViLT's processor resizes the shortest edge, bounds the longest,
    makes the sides multiples of 32 and pads a batch to its largest image), and
    ``joint_fusion`` gives the fusion that runs it. ``answer_head`` hands a fine-tuned VQA
    checkpoint's classifier and ``id2label`` to the ``vqa`` task."""

    single_stream = True
    gives_tokens = True

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, max_length: int, classifier: nn.Module | None = None,
                 answers: list[str] | None = None, rank_head: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__(model, tokenizer, image_processor, max_length, "encoder.max_length")
        self.hidden_size = model.config.hidden_size
        self.image_token_dim = self.image_pooled_dim = self.text_token_dim = self.text_pooled_dim = self.hidden_size
        self.__dict__["_answer_head"] = None if classifier is None else (classifier, list(answers or []))  # the task's head owns it
        self.__dict__["_rank_head"] = rank_head if rank_head is not None else nn.Linear(self.hidden_size, 1)

    @classmethod
    def create(cls, *, captions: Sequence[str], **params: Any) -> ViltEncoder:
        """The registered factory: the checkpoint when ``pretrained`` is set, else the tiny preset."""
        p = ViltParams(**params)
        encoder = load_pretrained(p.pretrained, p.max_length) if p.pretrained else build_tiny(p, captions)
        if p.max_image_length != -1:
            encoder.model.config.max_image_length = p.max_image_length
        return encoder

    def joint_fusion(self) -> ViltFusion:
        return ViltFusion(self, self._rank_head)

    def answer_head(self) -> tuple[nn.Module, list[str]] | None:
        return self._answer_head

    def export(self, directory: Path) -> None:
        """The ``ViltModel`` with its tokenizer and image processor, loadable by ``from_pretrained``."""
        self.save_transformers(directory)


def build_tiny(params: ViltParams, captions: Sequence[str]) -> ViltEncoder:
    """A small random-init ViLT from a ``ViltConfig``, with a byte-level tokenizer whose merges the training texts teach (``build_tokenizer``)."""
    from transformers import ViltConfig, ViltImageProcessor, ViltModel

    tokenizer = build_tokenizer(captions, params.max_length, params.vocabulary)
    config = ViltConfig(
        vocab_size=len(tokenizer), hidden_size=params.hidden_size, num_hidden_layers=params.layers,
        num_attention_heads=params.heads, intermediate_size=4 * params.hidden_size, max_position_embeddings=params.max_length,
        image_size=params.shortest_edge, patch_size=params.patch_size, max_image_length=params.max_image_length,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    processor = ViltImageProcessor(size={"shortest_edge": params.shortest_edge})
    return ViltEncoder(ViltModel(config, add_pooling_layer=True), tokenizer, processor, params.max_length)


def load_pretrained(pretrained: str, max_length: int) -> ViltEncoder:
    """ViLT and its processor from one checkpoint, with the VQA classifier and ``id2label`` of a
    ``ViltForQuestionAnswering`` or the rank head of a ``ViltForImageAndTextRetrieval``; a one-line ConfigError."""
    from transformers import AutoTokenizer, ViltConfig, ViltForImageAndTextRetrieval, ViltForQuestionAnswering, ViltImageProcessor, ViltModel

    with loading_checkpoint(pretrained, "ViLT checkpoint", "a ViLT model, its tokenizer and ViltImageProcessor"):
        architectures = ViltConfig.from_pretrained(pretrained).architectures or []
        tokenizer, processor = AutoTokenizer.from_pretrained(pretrained), ViltImageProcessor.from_pretrained(pretrained)
        if "ViltForQuestionAnswering" in architectures:
            qa = ViltForQuestionAnswering.from_pretrained(pretrained)
            answers = [qa.config.id2label[i] for i in range(qa.config.num_labels)]
            return ViltEncoder(qa.vilt, tokenizer, processor, max_length, classifier=qa.classifier, answers=answers)
        if "ViltForImageAndTextRetrieval" in architectures:
            rank = ViltForImageAndTextRetrieval.from_pretrained(pretrained)
            return ViltEncoder(rank.vilt, tokenizer, processor, max_length, rank_head=rank.rank_output)
        return ViltEncoder(ViltModel.from_pretrained(pretrained), tokenizer, processor, max_length)
