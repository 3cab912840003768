"""`dual`: a timm vision model and a transformers text model, each with its own preprocessing."""

from __future__ import annotations

import pickle
import warnings

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmreg.adapters import default_targets
from mmreg.components import Encoder, Modality, Tower
from mmreg.errors import ConfigError, did_you_mean
from mmreg.hf_encoder import local_path
from mmreg.layers import masked_mean
from mmreg.text import build_tokenizer
from mmreg_plugins.encoders.dual_plugin import TINY, DualParams

if TYPE_CHECKING:
    from PIL import Image

TINY_IMAGE_SIZE = 32
# The tiny vision preset: timm's ViT-Ti architecture shrunk to two 64-wide layers over 8-pixel patches.
TINY_VIT = {"model_name": "vit_tiny_patch16_224", "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}
# Default LoRA targets, by what the built tower contains: attention (ViT, Swin, ...), then the
# MLP of ConvNeXt-like nets, MobileNet/EfficientNet pointwise convs, ResNet's 3x3 convs; text:
# CLIP-like, BERT-like and DistilBERT-like attention projections.
VISION_TARGETS = (("qkv",), ("fc1", "fc2"), ("conv_pw", "conv_pwl"), ("conv2",))
TEXT_TARGETS = (("q_proj", "v_proj"), ("query", "value"), ("q_lin", "v_lin"))
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}


class DualEncoder(Encoder):
    """Two separate towers: tokens are the towers' last features, pooled vectors timm's pre-logits and a text pooling."""

    gives_tokens = True

    def __init__(
        self,
        vision: nn.Module,
        data_config: dict[str, Any],
        text: nn.Module,
        tokenizer: Any,
        text_pooling: str,
        max_length: int,
    ) -> None:
        from timm.data import create_transform

        super().__init__()
        self.vision, self.text, self.tokenizer = vision, text, tokenizer
        self.data_config = data_config
        self.transform = create_transform(**data_config)
        self.text_pooling, self.max_length = text_pooling, max_length
        self.max_length_setting = "encoder.max_length"  # up to the text model's own limit
        self.image_token_dim = vision.num_features
        # The pre-logits width: wider than num_features where the head has its own layer (MobileNetV3's conv_head).
        self.image_pooled_dim = getattr(vision, "head_hidden_size", vision.num_features)
        self.text_token_dim = self.text_pooled_dim = text.config.hidden_size
        self.read_tokens = self.read_pooled = True
        self.targets = {"vision": default_targets(vision, VISION_TARGETS), "text": default_targets(text, TEXT_TARGETS)}

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """timm's eval transform for this model: resize, centre crop, normalise with its mean and std."""
        return torch.stack([self.transform(image.convert("RGB")) for image in images])

    def pixel_inputs_uint8(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """timm's eval transform up to its tensor conversion (PIL resize and centre crop), as uint8;
        the device rescales and normalises with timm's mean and std (mmreg.pixels)."""
        import numpy as np

        resize_and_crop = self.transform.transforms[:-2]  # drop MaybeToTensor and Normalize
        arrays = []
        for image in images:
            for step in resize_and_crop:
                image = step(image)
            arrays.append(np.asarray(image.convert("RGB")))
        return {"pixel_values": torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()}

    def image_normalization(self) -> tuple[list[float], list[float]]:
        return list(self.data_config["mean"]), list(self.data_config["std"])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the batch's longest so short batches stay cheap; truncate at ``max_length``."""
        batch = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def use(self, *, tokens: bool, pooled: bool) -> None:
        self.read_tokens, self.read_pooled = tokens, pooled
        pooler = getattr(self.text, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)  # transformers' own pooler (BERT's tanh layer): we pool hidden states ourselves
        for param in self._unread_vision_parameters():
            param.requires_grad_(False)

    def _unread_vision_parameters(self) -> list[nn.Parameter]:
        """Trainable vision weights that no read output depends on, found by tracing one blank image.

        timm names its head-only parts differently per family (a ViT's fc_norm,
        MobileNetV3's conv_head, ConvNeXt's head.norm), so ask autograd instead.
        """
        trainable = [p for p in self.vision.parameters() if p.requires_grad]
        if not trainable:
            return []
        was_training = self.vision.training
        self.vision.eval()  # the blank image must not move batch-norm statistics
        try:
            blank = torch.zeros(1, *self.data_config["input_size"], device=trainable[0].device)
            out = self.encode_images(blank)
            total = sum(t.sum() for t in (out.tokens, out.pooled) if t is not None)
            if not total.requires_grad:
                return trainable
            grads = torch.autograd.grad(total, trainable, allow_unused=True)
        finally:
            self.vision.train(was_training)
        return [p for p, g in zip(trainable, grads, strict=True) if g is None]

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        features = self.vision.forward_features(pixel_values)
        pooled = self.vision.forward_head(features, pre_logits=True) if self.read_pooled else None
        return Modality(pooled, self._as_tokens(features) if self.read_tokens else None, None)

    def _as_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """[N, L, C] as they are (ViTs); a feature map (CNNs, Swin) flattened to one token per position."""
        if features.ndim == 3:
            return features
        if getattr(self.vision, "output_fmt", "NCHW") == "NHWC":
            return features.flatten(1, 2)
        return features.flatten(2).transpose(1, 2)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()
        pooled = None
        if self.read_pooled:
            pooled = masked_mean(hidden, mask) if self.text_pooling == "mean" else hidden[:, 0]
        if not self.read_tokens:
            return Modality(pooled)
        return Modality(pooled, hidden, mask)

    def save_preprocessing(self, directory: Path | str) -> None:
        """Write the text tokenizer and timm's data config, so the run records exactly how inputs were prepared."""
        self.tokenizer.save_pretrained(directory)
        (Path(directory) / "vision_data_config.json").write_text(json.dumps(self.data_config, indent=2) + "\n")

    def towers(self) -> dict[str, Tower]:
        return {"vision": Tower("vision", self.targets["vision"]), "text": Tower("text", self.targets["text"])}

    def export(self, directory: Path) -> None:
        """``vision/``: timm's ``save_for_hf`` (model.safetensors + config.json with the architecture,
        its arguments and the preprocessing), loaded by ``timm.create_model("local-dir:vision", pretrained=True)``;
        ``text/``: a transformers directory (model and tokenizer) for ``AutoModel.from_pretrained``."""
        from timm.models import save_for_hf

        save_for_hf(self.vision, str(Path(directory) / "vision"), safe_serialization=True, data_config=self.data_config)
        self.text.save_pretrained(Path(directory) / "text")
        self.tokenizer.save_pretrained(Path(directory) / "text")


def build_vision(p: DualParams, image_size: int | None) -> nn.Module:
    """The timm model without its classifier (num_classes=0), so forward_head(pre_logits=True) gives features."""
    import timm

    kwargs = {**TINY_VIT, "img_size": image_size} if p.vision == TINY else {"model_name": p.vision}
    try:
        model = timm.create_model(pretrained=p.vision_pretrained, num_classes=0, **kwargs)
    except Exception as exc:
        raise ConfigError(_vision_error(p, exc)) from exc
    if p.vision_checkpoint is not None:
        load_vision_checkpoint(model, p.vision_checkpoint, p.vision)
    if p.vision != TINY and image_size is not None and hasattr(model, "set_input_size"):
        model.set_input_size(img_size=(image_size, image_size))  # resamples a ViT's position embeddings
    return model


def load_vision_checkpoint(model: nn.Module, path: str, name: str) -> None:
    """Load a local state dict, requiring every model weight from it; extra entries (a classifier) are ignored.

    Not timm's ``pretrained_cfg_overlay=dict(file=path)``: with num_classes=0 timm
    loads that non-strictly, so a file of another architecture loads nothing, silently.
    """
    from timm.models import load_checkpoint

    if not Path(path).is_file():
        raise ConfigError(f"vision_checkpoint '{path}' is not a file; give a .safetensors or .pth state dict")
    fix = "give a state dict saved from that same architecture"
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol is not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            # .safetensors, or .pth through torch's weights_only unpickler: code in a pickle never runs
            missing = load_checkpoint(model, path, strict=False).missing_keys
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) or isinstance(exc.__cause__ or exc.__context__, pickle.UnpicklingError):
            raise ConfigError(
                f"vision_checkpoint '{path}' is a pickle holding more than tensors, which mmreg never unpickles; "
                f"save the state dict as .safetensors (safetensors.torch.save_file)"
            ) from exc
        raise ConfigError(f"cannot load vision_checkpoint '{path}' into timm model '{name}': {_reason(exc)}; {fix}") from exc
    if missing:
        raise ConfigError(
            f"vision_checkpoint '{path}' lacks {len(missing)} weights of timm model '{name}' (first: '{missing[0]}'); {fix}"
        )


def _vision_error(p: DualParams, exc: Exception) -> str:
    import timm

    reason = _reason(exc)
    if isinstance(exc, RuntimeError) and reason.startswith("Unknown model"):
        hint = did_you_mean(p.vision, timm.list_models())
        return f"unknown timm model '{p.vision}'{hint}; give a name from timm.list_models() or vision='tiny'"
    if p.vision_pretrained:
        return (
            f"cannot load timm's pretrained weights for '{p.vision}' (offline, and not in the local Hugging Face cache?): "
            f"{reason}; download them once with network access, or give vision_checkpoint=<local .safetensors or .pth file>"
        )
    return f"cannot build timm model '{p.vision}': {reason}"


def vision_data_config(vision: nn.Module, p: DualParams, image_size: int | None) -> dict[str, Any]:
    """timm's eval preprocessing for the model; the tiny preset keeps the whole image (it was never trained on crops)."""
    from timm.data import resolve_data_config

    overrides: dict[str, Any] = {}
    if image_size is not None:
        overrides["input_size"] = (3, image_size, image_size)
    if p.vision == TINY:
        overrides["crop_pct"] = 1.0
    return resolve_data_config(overrides, model=vision)


def build_tiny_text(captions: Sequence[str], max_length: int, vocabulary: str = "bytes") -> tuple[nn.Module, Any]:
    """A small random-init BERT with a byte-level tokenizer whose merges the training captions teach (``build_tokenizer``), built without BERT's unused pooler."""
    from transformers import BertConfig, BertModel

    tokenizer = build_tokenizer(captions, max_length, vocabulary)
    config = BertConfig(
        **TINY_BERT, vocab_size=len(tokenizer), max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id
    )
    return BertModel(config, add_pooling_layer=False), tokenizer


def load_text(name: str, max_length: int) -> tuple[nn.Module, Any]:
    """Model and tokenizer from one checkpoint, in float32 whatever it was saved in, or a one-line ConfigError."""
    from transformers import AutoModel, AutoTokenizer

    try:
        if local_path(name) and not Path(name).is_dir():
            raise FileNotFoundError("no such directory")
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name, dtype=torch.float32)
    except Exception as exc:
        raise ConfigError(
            f"cannot load text model '{name}': {_reason(exc)}; give a directory saved with save_pretrained "
            f"(model and tokenizer) or a hub id in the local cache"
        ) from exc
    if max_length > tokenizer.model_max_length:
        limit = tokenizer.model_max_length
        raise ConfigError(f"max_length {max_length} exceeds the {limit} tokens of text model '{name}'; lower max_length")
    return model, tokenizer


def _reason(exc: BaseException, limit: int = 300) -> str:
    """The exception on one line: some (torch's load_state_dict) put the cause on their second line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build(*, captions: Sequence[str], **params: Any) -> DualEncoder:
    """The registered factory: build both towers and their preprocessing from the validated params."""
    p = DualParams(**params)
    image_size = p.image_size or (TINY_IMAGE_SIZE if p.vision == TINY else None)
    vision = build_vision(p, image_size)
    text, tokenizer = build_tiny_text(captions, p.max_length, p.vocabulary) if p.text == TINY else load_text(p.text, p.max_length)
    return DualEncoder(vision, vision_data_config(vision, p, image_size), text, tokenizer, p.text_pooling, p.max_length)
