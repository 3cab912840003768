"""The PEFT strategy contract: applied in place, encoder still whole, adapters trained, schedule by step alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..components import Encoder, PeftStrategy
from .contract import expect


def _trainable(encoder: Encoder) -> frozenset[str]:
    return frozenset(n for n, p in encoder.named_parameters() if p.requires_grad)


def check_peft(
    make_strategy: Callable[[], PeftStrategy],
    make_encoder: Callable[[], Encoder],
    images: Sequence,
    texts: Sequence[str],
    *,
    total_steps: int = 6,
    steps_per_epoch: int = 2,
) -> None:
    """``make_strategy()`` and ``make_encoder()`` build fresh objects (the encoder a tiny one).

    Checks: ``apply`` changes the encoder in place and returns it; the encoder still gives its
    declared pooled widths; weights the strategy added (adapters) train and receive a gradient;
    no weight trains at any step that was frozen right after ``apply`` (the optimizer holds only
    those); what trains at step k depends on k alone, so a run resumed at k (a fresh strategy
    called with ``on_step_start(k)`` first) trains exactly what an uninterrupted run trains.
    Raises ContractViolation naming the broken contract."""
    encoder, strategy = make_encoder(), make_strategy()
    who = f"peft strategy {type(strategy).__name__}"
    before = {id(p) for p in encoder.parameters()}  # by identity: peft renames the weights it wraps
    returned = strategy.apply(encoder)
    expect(returned is encoder, who, "apply changes the encoder in place and returns it",
           "apply returned None" if returned is None else f"apply returned another object, a {type(returned).__name__}")  # fmt: skip
    after_apply = _trainable(encoder)

    pixels, batch = encoder.preprocess(list(images)), encoder.tokenize(list(texts))
    image, text = encoder.encode_images(pixels), encoder.encode_texts(batch["input_ids"], batch["attention_mask"])
    for what, out, rows, width in (("image", image, len(images), encoder.image_pooled_dim), ("text", text, len(texts), encoder.text_pooled_dim)):
        ok = out.pooled is not None and out.pooled.shape == (rows, width)
        expect(ok, who, "the encoder still gives its declared widths", f"{what} pooled {None if out.pooled is None else tuple(out.pooled.shape)}")
    added = {n: p for n, p in encoder.named_parameters() if id(p) not in before}
    expect(all(p.requires_grad for p in added.values()), who, "added weights train", f"frozen: {sorted(n for n, p in added.items() if not p.requires_grad)}")
    if added:
        total = sum(t.float().sum() for m in (image, text) for t in (m.pooled, m.tokens) if t is not None)
        total.backward()  # type: ignore[union-attr]
        silent = sorted(n for n, p in added.items() if p.grad is None)
        expect(not silent, who, "added weights receive a gradient", f"no gradient reached {silent[:4]}")

    strategy.on_train_start(total_steps, steps_per_epoch)
    schedule = []
    for step in range(total_steps):
        strategy.on_step_start(step)
        now = _trainable(encoder)
        extra = sorted(now - after_apply)
        expect(not extra, who, "never trains a weight frozen after apply", f"at step {step} {extra[:4]} train")
        schedule.append(now)
    # Resume at the first step, at each step where what trains changes, and at the last step.
    for step in sorted({0, total_steps - 1, *(s for s in range(1, total_steps) if schedule[s] != schedule[s - 1])}):
        encoder, strategy = make_encoder(), make_strategy()
        strategy.apply(encoder)
        strategy.on_train_start(total_steps, steps_per_epoch)
        strategy.on_step_start(step)
        expect(_trainable(encoder) == schedule[step], who, "what trains depends only on the step (exact resume)",
               f"resumed at step {step}, {len(_trainable(encoder) ^ schedule[step])} weights differ from the uninterrupted run")  # fmt: skip
