"""Registers the `zeroshot` task: parameters, the named prompt-template sets and help, no torch;
zeroshot.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmreg.hookspecs import hookimpl

# The 80 ImageNet prompt templates of CLIP (Radford et al. 2021, section 3.1.4; openai/CLIP's
# notebooks/Prompt_Engineering_for_ImageNet.ipynb; open_clip's OPENAI_IMAGENET_TEMPLATES), in their order.
OPENAI_TEMPLATES = (
    "a bad photo of a {c}.", "a photo of many {c}.", "a sculpture of a {c}.", "a photo of the hard to see {c}.",
    "a low resolution photo of the {c}.", "a rendering of a {c}.", "graffiti of a {c}.", "a bad photo of the {c}.",
    "a cropped photo of the {c}.", "a tattoo of a {c}.", "the embroidered {c}.", "a photo of a hard to see {c}.",
    "a bright photo of a {c}.", "a photo of a clean {c}.", "a photo of a dirty {c}.", "a dark photo of the {c}.",
    "a drawing of a {c}.", "a photo of my {c}.", "the plastic {c}.", "a photo of the cool {c}.",
    "a close-up photo of a {c}.", "a black and white photo of the {c}.", "a painting of the {c}.", "a painting of a {c}.",
    "a pixelated photo of the {c}.", "a sculpture of the {c}.", "a bright photo of the {c}.", "a cropped photo of a {c}.",
    "a plastic {c}.", "a photo of the dirty {c}.", "a jpeg corrupted photo of a {c}.", "a blurry photo of the {c}.",
    "a photo of the {c}.", "a good photo of the {c}.", "a rendering of the {c}.", "a {c} in a video game.",
    "a photo of one {c}.", "a doodle of a {c}.", "a close-up photo of the {c}.", "a photo of a {c}.",
    "the origami {c}.", "the {c} in a video game.", "a sketch of a {c}.", "a doodle of the {c}.",
    "a origami {c}.", "a low resolution photo of a {c}.", "the toy {c}.", "a rendition of the {c}.",
    "a photo of the clean {c}.", "a photo of a large {c}.", "a rendition of a {c}.", "a photo of a nice {c}.",
    "a photo of a weird {c}.", "a blurry photo of a {c}.", "a cartoon {c}.", "art of a {c}.",
    "a sketch of the {c}.", "a embroidered {c}.", "a pixelated photo of a {c}.", "itap of the {c}.",
    "a jpeg corrupted photo of the {c}.", "a good photo of a {c}.", "a plushie {c}.", "a photo of the nice {c}.",
    "a photo of the small {c}.", "a photo of the weird {c}.", "the cartoon {c}.", "art of the {c}.",
    "a drawing of the {c}.", "a photo of the large {c}.", "a black and white photo of a {c}.", "the plushie {c}.",
    "a dark photo of a {c}.", "itap of a {c}.", "graffiti of the {c}.", "a toy {c}.",
    "itap of my {c}.", "a photo of a cool {c}.", "a photo of a small {c}.", "a tattoo of the {c}.",
)  # fmt: skip
# The 7 of them the same notebook selected (open_clip's SIMPLE_IMAGENET_TEMPLATES).
SIMPLE_TEMPLATES = (
    "itap of a {c}.", "a bad photo of the {c}.", "a origami {c}.", "a photo of the large {c}.",
    "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}.",
)  # fmt: skip
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"openai": OPENAI_TEMPLATES, "simple": SIMPLE_TEMPLATES}
CLASS = "{c}"  # where a template names the class


class PromptParams(BaseModel):
    """How classes become prompts (``zeroshot``, and ``classification``'s zero-shot head)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    templates: str | list[str] | dict[str, list[str]] = Field(
        "openai",
        description="prompts per class: a named set (openai: CLIP's 80 ImageNet templates; simple: the 7 CLIP selected), "
        "a list of templates with {c} for the class name, or {class: [prompts]} written out per class (CuPL-style); "
        "each class is the normalised mean of its normalised prompt embeddings",
    )

    @field_validator("templates")
    @classmethod
    def _usable(cls, value: str | list[str] | dict[str, list[str]]) -> str | list[str] | dict[str, list[str]]:
        if isinstance(value, str):
            if value not in TEMPLATE_SETS:
                raise ValueError(f"'{value}' is no named set ({', '.join(TEMPLATE_SETS)}); or give a list such as [\"a photo of a {CLASS}.\"]")
        elif isinstance(value, list):
            if not value:
                raise ValueError(f"no templates; give at least one, e.g. [\"a photo of a {CLASS}.\"]")
            missing = [t for t in value if CLASS not in t]
            if missing:
                raise ValueError(f"template '{missing[0]}' has no {CLASS} where the class name goes; write e.g. \"a photo of a {CLASS}.\"")
        else:
            empty = [name for name, prompts in value.items() if not prompts]
            if not value or empty:
                raise ValueError(f"class '{empty[0]}' has no prompts; give each class at least one" if empty else "no classes; map each class to its prompts")
        return value


class ZeroShotParams(PromptParams):
    """How classes become prompts, and which embeddings score them."""

    space: Literal["fusion", "encoder"] = Field(
        "fusion",
        description="fusion: images scored against the class embeddings by the model's fusion (what the run trains; every fusion); "
        "encoder: cosine of the encoder's own pooled embeddings (CLIP's zero-shot, e.g. before any training; needs an encoder with a shared space)",
    )


@hookimpl
def mmreg_register_tasks(register):
    register(
        "zeroshot",
        "mmreg_plugins.tasks.zeroshot:ZeroShot",
        params=ZeroShotParams,
        help="classify images by their class prompts, no head (CLIP's zero-shot): acc1 (headline), acc5, mean per-class recall",
    )
