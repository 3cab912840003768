"""What encoders built on one transformers checkpoint share: preprocessing by its tokenizer and image
processor, and saving the three as transformers' own ``save_pretrained`` writes them, so
``from_pretrained`` reloads each without mmreg (the ``clip``, ``blip`` and ``vilt`` encoders)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .components import Encoder
from .errors import ConfigError
from .pixels import processor_uint8

if TYPE_CHECKING:
    from PIL import Image


class TransformersEncoder(Encoder):
    """An encoder over a transformers ``model`` (a ``PreTrainedModel``), its ``tokenizer`` and its
    ``image_processor`` (a transformers image processor, e.g. ``CLIPImageProcessor``).

    Images are preprocessed by the image processor (its resize, crop, rescale and normalisation,
    exactly as the checkpoint was trained), texts by the tokenizer, and ``save_preprocessing``
    writes both beside the weights. Subclasses set the ``*_dim`` attributes and encode; an
    ``export`` that hands the model back to transformers calls ``save_transformers``.
    """

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, max_length: int, max_length_setting: str | None) -> None:
        super().__init__()
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.max_length, self.max_length_setting = max_length, max_length_setting

    def pixel_inputs(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """The image processor's ``pixel_values``, plus its ``pixel_mask`` [N, H, W] (1 at real
        pixels) where it pads the batch to its largest image (ViLT's)."""
        out = self.image_processor(images=list(images), return_tensors="pt")
        return {key: out[key] for key in ("pixel_values", "pixel_mask") if key in out}

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise exactly as the checkpoint was trained (the image processor)."""
        return self.pixel_inputs(images)["pixel_values"]

    def pixel_inputs_uint8(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """``pixel_inputs`` on uint8 pixels: the image processor with rescaling and normalisation off
        (padding 0, ``pixel_mask`` as there); normalised on the device (mmreg.pixels), which keeps
        the padding at 0 as the processor does."""
        return processor_uint8(self.image_processor, images)

    def image_normalization(self) -> tuple[list[float], list[float]]:
        """The image processor's ``image_mean`` and ``image_std``."""
        return list(self.image_processor.image_mean), list(self.image_processor.image_std)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the batch's longest so short batches stay cheap; truncate at ``max_length``."""
        batch = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def save_preprocessing(self, directory: Path | str) -> None:
        """Write tokenizer and image processor (their ``save_pretrained``) beside the weights, so
        ``pretrained=directory`` reloads them."""
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)

    def save_transformers(self, directory: Path | str) -> None:
        """A transformers directory: the model's ``save_pretrained`` with the tokenizer and image
        processor, loadable by ``from_pretrained`` (AutoModel, AutoTokenizer, AutoImageProcessor)."""
        self.model.save_pretrained(directory)
        self.save_preprocessing(directory)


def local_path(name: str) -> bool:
    """A path rather than a hub id, so a typo reads "no such directory", not a hub-id syntax error."""
    return name.startswith((".", "/")) or Path(name).exists()


@contextmanager
def loading_checkpoint(name: str, what: str, contents: str) -> Iterator[None]:
    """Load checkpoint ``name`` (a directory or a cached hub id, ``from_pretrained``) inside the block.
    A path that is no directory, or any failure while loading, raises one ConfigError line: ``cannot load
    WHAT 'NAME': <the cause's first line>; give a directory saved with save_pretrained (CONTENTS) or a hub
    id in the local cache``."""
    try:
        if local_path(name) and not Path(name).is_dir():
            raise FileNotFoundError("no such directory")
        yield
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ConfigError(
            f"cannot load {what} '{name}': {first}; give a directory saved with save_pretrained ({contents}) or a hub id in the local cache"
        ) from exc


__all__ = ["TransformersEncoder", "loading_checkpoint", "local_path"]
