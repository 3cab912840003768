"""`blip2`: BLIP-2 (Li et al. 2023; transformers' ``Blip2ForConditionalGeneration``): a frozen vision
transformer, a Q-Former whose learned queries read the image, and a projection of the queries into
the input embeddings of a frozen language model, causal (OPT) or encoder-decoder (T5). A tiny
random-init preset of either kind, or a saved/hub checkpoint.

What trains by default is what LAVIS trains: the Q-Former, the query tokens and the language
projection; the vision transformer only with ``train_vision`` (then in fp32 under autocast, which
LAVIS#409 found necessary against NaNs), the language model never in full (adapters through the
``text`` tower, e.g. ``--peft lora``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmreg.components import Modality, Tower
from mmreg.data import IGNORE
from mmreg.hf_encoder import TransformersEncoder, loading_checkpoint
from mmreg.text import build_tokenizer
from mmreg_plugins.encoders.blip2_plugin import Blip2Params

IMAGE_TOKEN = "<image>"  # the placeholder Blip2Processor adds; the model writes a query's embedding at each
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # encoder.frozen_dtype


class Blip2Encoder(TransformersEncoder):
    """``conditions_language_model``: the image is ``num_query_tokens`` embeddings in the language
    model's input space (``encode_images``: tokens [N, Q, D_lm], pooled their mean), and the tasks that
    write text (``captioning``, ``vqa`` answering by generation) reach the language model through
    ``language_inputs``, ``language_logits`` and ``generate_text``, which do what
    ``Blip2ForConditionalGeneration``'s ``forward`` and ``generate`` do: the queries' embeddings
    replace the ``<image>`` placeholders in front of the text (``image_token_id``)."""

    conditions_language_model = True
    gives_tokens = True

    def __init__(
        self, model: Any, tokenizer: Any, image_processor: Any, max_length: int, train_vision: bool, frozen_dtype: str = "fp32"
    ) -> None:
        super().__init__(model, tokenizer, image_processor, max_length, "encoder.max_length")
        config = model.config
        self.num_query_tokens = config.num_query_tokens
        self.image_token_id = config.image_token_id
        self.encoder_decoder = not config.use_decoder_only_language_model
        width = config.text_config.hidden_size
        self.image_token_dim = self.image_pooled_dim = self.text_token_dim = self.text_pooled_dim = width
        model.requires_grad_(False)  # LAVIS: the language model (and by default the ViT) frozen
        for part in (model.qformer, model.language_projection):
            part.requires_grad_(True)
        model.query_tokens.requires_grad_(True)
        model.vision_model.requires_grad_(train_vision)
        if frozen_dtype != "fp32":  # LAVIS keeps the frozen parts in half precision: half their memory
            dtype = DTYPES[frozen_dtype]
            model.language_model.to(dtype)
            if not train_vision:
                model.vision_model.to(dtype)

    @classmethod
    def create(cls, *, captions: Sequence[str], **params: Any) -> Blip2Encoder:
        """The registered factory: the checkpoint when ``pretrained`` is set, else the tiny preset."""
        p = Blip2Params(**params)
        return load_pretrained(p) if p.pretrained else build_tiny(p, captions)

    @property
    def language_model(self) -> Any:
        return self.model.language_model

    def towers(self) -> dict[str, Tower]:
        """``vision``: the ViT; ``bridge``: the Q-Former (the query tokens and the language projection sit
        outside every tower); ``text``: the language model, LoRA on its attention's query and value."""
        lm = self.model.config.text_config.model_type
        targets = ("q", "v") if lm in ("t5", "mt5", "umt5") else ("q_proj", "v_proj")
        return {
            "vision": Tower("model.vision_model", ("qkv",)),
            "bridge": Tower("model.qformer", ("query", "value")),
            "text": Tower("model.language_model", targets),
        }

    def vision_trains(self) -> bool:
        return any(p.requires_grad for p in self.model.vision_model.parameters())

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        """The image as the language model reads it: Q query outputs projected to its width, tokens
        [N, Q, D_lm] and their mean [N, D_lm]. A training ViT runs in fp32 outside autocast."""
        vision = self.model.vision_model
        if self.vision_trains() and torch.is_autocast_enabled(pixel_values.device.type):
            with torch.autocast(pixel_values.device.type, enabled=False):
                image = vision(pixel_values=pixel_values.float()).last_hidden_state
        else:  # in the ViT's own dtype (half where encoder.frozen_dtype stores it so)
            image = vision(pixel_values=pixel_values.to(vision.embeddings.patch_embedding.weight.dtype)).last_hidden_state
        queries = self.model.query_tokens.expand(image.shape[0], -1, -1)
        mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        out = self.model.qformer(query_embeds=queries, encoder_hidden_states=image, encoder_attention_mask=mask).last_hidden_state
        tokens = self.model.language_projection(out)
        return Modality(tokens.mean(dim=1), tokens, None)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        """The language model's input embeddings of the text [N, L, D_lm] and their mean over real
        tokens [N, D_lm] (no language-model pass: BLIP-2 reads text only together with the image)."""
        tokens = self.language_model.get_input_embeddings()(input_ids)
        weights = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return Modality((tokens * weights).sum(1) / weights.sum(1).clamp(min=1), tokens, attention_mask.bool())

    # -- the language model, as Blip2ForConditionalGeneration drives it ------------------------------

    def _ids(self, text: str) -> list[int]:
        """``text``'s ids with the tokenizer's own special tokens, less a final end-of-sequence one."""
        ids = self.tokenizer(text, verbose=False)["input_ids"]
        return ids[:-1] if ids and ids[-1] == self.tokenizer.eos_token_id else ids

    def language_inputs(self, prompts: Sequence[str], targets: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The tensors ``Blip2ForConditionalGeneration`` takes beside ``pixel_values``, for N prompts and,
        when training, the N texts to write after them.

        ``lm_input_ids``, ``lm_attention_mask`` [N, L]: Q ``<image>`` placeholders, then the prompt (for
        a causal model followed by the target and the end-of-sequence token); padded on the left for
        generation, on the right for training. ``lm_labels``: for a causal model [N, L], the input ids
        with -100 on the placeholders, the prompt and the padding (what ``labels=`` takes); for an
        encoder-decoder one [N, T] the target and its end token, -100 on padding. The prompt is read
        whole; the target is cut where prompt and target would pass ``max_length`` tokens."""
        image = [self.image_token_id] * self.num_query_tokens
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        rows, labels = [], []
        for i, prompt in enumerate(prompts):
            given = self._ids(prompt)
            if self.encoder_decoder:  # the encoder reads the prompt with the tokenizer's end token, as T5 was trained
                rows.append(image + self.tokenizer(prompt, verbose=False)["input_ids"])
            elif targets is None:
                rows.append(image + given)
            if targets is None:
                continue
            if self.encoder_decoder:
                target = self._ids(targets[i])
                target = target[1:] if target and target[0] == self.tokenizer.bos_token_id else target
                labels.append([*target[: self.max_length - 1], eos])
            else:
                text = f"{prompt} {targets[i]}".strip() if prompt else targets[i]
                ids = [*self._ids(text)[: max(self.max_length, len(given) + 1) - 1], eos]
                rows.append(image + ids)
                scored = [IGNORE] * (len(image) + min(len(given), len(ids) - 1)) + ids[min(len(given), len(ids) - 1) :]
                labels.append(scored)
        side = "left" if targets is None else "right"
        out = {"lm_input_ids": _pad(rows, pad, side), "lm_attention_mask": _pad([[1] * len(r) for r in rows], 0, side)}
        if targets is not None:
            out["lm_labels"] = _pad(labels, IGNORE, "right")
        return out

    def _embeds(self, queries: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The language model's input embeddings with each ``<image>`` placeholder replaced by a query."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        where = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(where, queries.to(embeds.dtype))

    def language_logits(self, image: Modality, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits [N, L', V] and the token each predicts [N, L'] (-100 where none is scored)
        for a batch of ``language_inputs``; their mean cross-entropy is ``labels=``'s loss."""
        ids, mask, labels = batch["lm_input_ids"], batch["lm_attention_mask"], batch["lm_labels"]
        embeds = self._embeds(image.tokens, ids)
        if self.encoder_decoder:  # the decoder reads the labels shifted right, as labels= would make them, without a loss of its own
            decoder_ids = self.language_model.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.language_model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids).logits
            return logits, labels
        logits = self.language_model(inputs_embeds=embeds, attention_mask=mask).logits
        return logits[:, :-1], labels[:, 1:]

    @torch.inference_mode()
    def generate_text(self, image: Modality, batch: Mapping[str, torch.Tensor], *, num_beams: int, max_new_tokens: int) -> list[str]:
        """What the language model writes after each prompt of a batch of ``language_inputs`` (no
        targets), decoded without the prompt and special tokens: transformers' ``generate``, greedy
        (``num_beams`` 1) or beam search, at most ``max_new_tokens`` tokens."""
        ids, mask = batch["lm_input_ids"], batch["lm_attention_mask"]
        inputs: dict[str, torch.Tensor] = {"inputs_embeds": self._embeds(image.tokens, ids), "attention_mask": mask}
        if not self.encoder_decoder:
            inputs["input_ids"] = ids
        out = self.language_model.generate(**inputs, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        written = out if self.encoder_decoder else out[:, ids.shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(written.tolist(), skip_special_tokens=True)]

    def save_preprocessing(self, directory: Path | str) -> None:
        """A ``Blip2Processor`` (tokenizer with its ``<image>`` token, image processor, the query count)."""
        from transformers import Blip2Processor

        Blip2Processor(self.image_processor, self.tokenizer, num_query_tokens=self.num_query_tokens).save_pretrained(directory)

    def export(self, directory: Path) -> None:
        """A transformers directory: ``Blip2ForConditionalGeneration.from_pretrained(directory)`` and
        ``Blip2Processor.from_pretrained(directory)`` caption and answer as the run does."""
        self.save_transformers(directory)


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    """Rows of ids as one long tensor [N, longest], padded with ``value`` on ``side`` (torch's ``pad_sequence``)."""
    from torch.nn.utils.rnn import pad_sequence

    return pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=value, padding_side=side)


def build_tiny(params: Blip2Params, captions: Sequence[str]) -> Blip2Encoder:
    """A small random-init BLIP-2 from a ``Blip2Config``, OPT or T5 as its language model, with a
    byte-level tokenizer whose merges the training texts teach (``build_tokenizer``) and the
    ``<image>`` token. The query tokens are drawn as LAVIS draws them, normal with the config's
    ``initializer_range`` (transformers leaves them zero: every query alike, and parts of the
    Q-Former without gradient)."""
    from tokenizers import AddedToken
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor

    tokenizer = build_tokenizer(captions, params.max_length, params.vocabulary)
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, normalized=False, special=True)], special_tokens=True)
    width, layers, heads = params.hidden_size, params.layers, params.heads
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "vocab_size": len(tokenizer)}
    if params.language_model == "opt":
        text = {"model_type": "opt", "hidden_size": width, "ffn_dim": 4 * width, "word_embed_proj_dim": width, "num_hidden_layers": layers,
                "num_attention_heads": heads, "max_position_embeddings": 128, "bos_token_id": tokenizer.bos_token_id, **ids}  # fmt: skip
    else:
        text = {"model_type": "t5", "d_model": width, "d_ff": 4 * width, "d_kv": width // heads, "num_layers": layers, "num_decoder_layers": layers,
                "num_heads": heads, "decoder_start_token_id": tokenizer.pad_token_id, **ids}  # fmt: skip
    config = Blip2Config(
        vision_config={"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers, "num_attention_heads": heads,
                       "image_size": params.image_size, "patch_size": params.patch_size},
        qformer_config={"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers, "num_attention_heads": heads,
                        "encoder_hidden_size": width, "vocab_size": len(tokenizer)},
        text_config=text,
        num_query_tokens=params.num_query_tokens,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )  # fmt: skip
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, config.initializer_range)
    processor = BlipImageProcessor(size={"height": params.image_size, "width": params.image_size})
    return Blip2Encoder(model, tokenizer, processor, params.max_length, params.train_vision, params.frozen_dtype)


def load_pretrained(params: Blip2Params) -> Blip2Encoder:
    """Model and ``Blip2Processor`` from one checkpoint, or a one-line ConfigError."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    pretrained = str(params.pretrained)
    with loading_checkpoint(pretrained, "BLIP-2 checkpoint", "Blip2ForConditionalGeneration and Blip2Processor"):
        model = Blip2ForConditionalGeneration.from_pretrained(pretrained, dtype=torch.float32)
        processor = Blip2Processor.from_pretrained(pretrained)
    return Blip2Encoder(model, processor.tokenizer, processor.image_processor, params.max_length, params.train_vision, params.frozen_dtype)
