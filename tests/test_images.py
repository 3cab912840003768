"""Images as a viewer shows them: every kind of file is built on disk, read through `mmreg data inspect`
(a real subprocess), and the pixels the encoder receives (batch.safetensors) are checked against the
image as shown: EXIF orientation applied, 16-bit scaled by 1/257, transparency over the background."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from safetensors.torch import load_file

from mmreg.errors import DataError
from mmreg.images import parse_colour, to_rgb

SIDE = 64  # each image: four uniform quadrants (top left, top right, bottom left, bottom right)
BOXES = [(0, 0, 31, 31), (32, 0, 63, 31), (0, 32, 31, 63), (32, 32, 63, 63)]
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
TINY = ["--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "model.dim=32"]

Colour = tuple[int, int, int]
Expected = Callable[[Colour], list[Colour]]  # background -> the four quadrants as a viewer shows them


def quadrants(mode: str, values: list) -> Image.Image:
    image = Image.new(mode, (SIDE, SIDE))
    draw = ImageDraw.Draw(image)
    for box, value in zip(BOXES, values, strict=True):
        draw.rectangle(box, fill=value)
    return image


def sixteen_bit(values: list[int]) -> Image.Image:
    pixels = np.zeros((SIDE, SIDE), np.uint16)
    for (x0, y0, x1, y1), v in zip(BOXES, values, strict=True):
        pixels[y0 : y1 + 1, x0 : x1 + 1] = v
    return Image.fromarray(pixels)


def gray(v: float) -> Colour:
    return (round(v),) * 3  # type: ignore[return-value]


def over(colour: Colour, alpha: int, background: Colour) -> Colour:
    """``colour`` at opacity alpha/255 over ``background`` (alpha blending, Porter-Duff "over")."""
    return tuple(round(c * alpha / 255 + b * (1 - alpha / 255)) for c, b in zip(colour, background, strict=True))  # type: ignore[return-value]


def palette(values: list[int], transparent: int | None) -> Image.Image:
    image = quadrants("P", values)
    image.putpalette([0, 0, 0, *RED, *GREEN, *BLUE])
    if transparent is not None:
        image.info["transparency"] = transparent
    return image


def write_rgb16(path: Path) -> None:
    """A 48-bit RGB PNG (PIL cannot write one; OpenCV writes BGR)."""
    pixels = np.zeros((SIDE, SIDE, 3), np.uint16)
    for (x0, y0, x1, y1), rgb in zip(BOXES, RGB16, strict=True):
        pixels[y0 : y1 + 1, x0 : x1 + 1] = rgb[::-1]
    cv2.imwrite(str(path), pixels)


def animated(path: Path, **options) -> None:
    first = quadrants("RGB", [RED, GREEN, BLUE, YELLOW])
    first.save(path, save_all=True, append_images=[Image.new("RGB", (SIDE, SIDE), "black")], duration=100, **options)


RGB16 = [(65535, 0, 0), (0, 52000, 0), (0, 0, 30000), (20000, 40000, 60000)]
WRITERS: dict[str, tuple[Callable[[Path], None], Expected]] = {
    "gray16.png": (
        lambda p: sixteen_bit([6000, 52000, 0, 65535]).save(p),
        lambda bg: [gray(v / 257) for v in (6000, 52000, 0, 65535)],
    ),
    "gray12-in-16bit.png": (  # a 12-bit camera's range stored in 16 bits: shown dark, as viewers do
        lambda p: sixteen_bit([0, 1000, 2000, 4095]).save(p),
        lambda bg: [gray(v / 257) for v in (0, 1000, 2000, 4095)],
    ),
    "gray16-transparent-value.png": (
        lambda p: sixteen_bit([0, 6000, 52000, 65535]).save(p, transparency=0),
        lambda bg: [bg, *(gray(v / 257) for v in (6000, 52000, 65535))],
    ),
    "rgb16.png": (write_rgb16, lambda bg: [tuple(round(c / 257) for c in rgb) for rgb in RGB16]),  # type: ignore[misc]
    "rgba-black-transparent.png": (
        lambda p: quadrants("RGBA", [(*RED, 255), (0, 0, 0, 0), (*BLUE, 128), (*GREEN, 255)]).save(p),
        lambda bg: [RED, bg, over(BLUE, 128, bg), GREEN],
    ),
    "la.png": (
        lambda p: quadrants("LA", [(50, 255), (0, 0), (200, 128), (255, 255)]).save(p),
        lambda bg: [gray(50), bg, over(gray(200), 128, bg), gray(255)],
    ),
    "palette-transparent-index.png": (
        lambda p: palette([1, 0, 2, 3], transparent=0).save(p, transparency=0),
        lambda bg: [RED, bg, GREEN, BLUE],
    ),
    "rgb-transparent-colour.png": (
        lambda p: quadrants("RGB", [(0, 0, 0), RED, GREEN, BLUE]).save(p, transparency=(0, 0, 0)),
        lambda bg: [bg, RED, GREEN, BLUE],
    ),
    "gray-transparent-value.png": (
        lambda p: quadrants("L", [0, 100, 200, 255]).save(p, transparency=0),
        lambda bg: [bg, gray(100), gray(200), gray(255)],
    ),
    "palette.png": (lambda p: palette([1, 2, 3, 0], None).save(p), lambda bg: [RED, GREEN, BLUE, (0, 0, 0)]),
    "gray.png": (lambda p: quadrants("L", [0, 85, 170, 255]).save(p), lambda bg: [gray(v) for v in (0, 85, 170, 255)]),
    "bilevel.png": (lambda p: quadrants("1", [0, 1, 1, 0]).save(p), lambda bg: [gray(0), gray(255), gray(255), gray(0)]),
    "cmyk.jpg": (
        lambda p: quadrants("CMYK", [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255)]).save(p, quality=100),
        lambda bg: [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0)],
    ),
    "animated.gif": (animated, lambda bg: [RED, GREEN, BLUE, YELLOW]),
    "animated.png": (animated, lambda bg: [RED, GREEN, BLUE, YELLOW]),
    "animated.webp": (lambda p: animated(p, lossless=True), lambda bg: [RED, GREEN, BLUE, YELLOW]),
}
ORIENTATIONS = range(1, 9)  # EXIF orientation 1 (as stored) to 8; phones write 6 for a portrait photo


def write_oriented(path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    quadrants("RGB", [RED, GREEN, BLUE, YELLOW]).save(path, exif=exif, quality=95, subsampling=0)


def as_shown(path: Path) -> list[Colour]:
    """A JPEG's quadrants as a viewer shows it: PIL's decoding, the EXIF orientation applied."""
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    return [tuple(int(c) for c in np.median(shown[y0 + 8 : y1 - 7, x0 + 8 : x1 - 7], axis=(0, 1))) for x0, y0, x1, y1 in BOXES]  # type: ignore[misc]


def build(folder: Path) -> list[tuple[str, Expected]]:
    """Every image kind written into ``folder``, listed in pairs.jsonl in this order."""
    kinds: list[tuple[str, Expected]] = []
    for name, (write, expected) in WRITERS.items():
        write(folder / name)
        kinds.append((name, expected))
    for orientation in ORIENTATIONS:
        name = f"exif-{orientation}.jpg"
        write_oriented(folder / name, orientation)
        shown = as_shown(folder / name)
        kinds.append((name, lambda bg, shown=shown: shown))
    rows = [json.dumps({"image_path": name, "caption": f"image {i} {name}"}) for i, (name, _) in enumerate(kinds)]
    (folder / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    return kinds


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def received(out: Path) -> np.ndarray:
    """The batch's pixels as the encoder receives them, de-normalised to 0-255: [N, H, W, 3]."""
    report = json.loads((out / "report.json").read_text())
    mean, std = (np.array(report[k]).reshape(1, 3, 1, 1) for k in ("image_mean", "image_std"))
    pixels = load_file(out / "batch.safetensors")["pixel_values"].double().numpy()
    return ((pixels * std + mean) * 255).transpose(0, 2, 3, 1)


def centres(image: np.ndarray) -> list[np.ndarray]:
    """The uniform middle of each quadrant of an [H, W, 3] image (a quarter of the side from each edge)."""
    h, w = image.shape[:2]
    return [image[y : y + h // 4, x : x + w // 4].reshape(-1, 3) for y in (h // 8, h * 5 // 8) for x in (w // 8, w * 5 // 8)]


def flipped(quads: list[Colour]) -> list[Colour]:
    return [quads[1], quads[0], quads[3], quads[2]]


@pytest.mark.parametrize(
    "split,extra,background",
    [
        ("val", [], (255, 255, 255)),  # evaluation, white by default
        ("train", ["--augment", "albumentations", "--set", "data.background=#204080"], (32, 64, 128)),  # training, augmented
    ],
    ids=["val-white", "train-flipped-on-blue"],
)
def test_the_encoder_receives_each_kind_of_image_as_a_viewer_shows_it(tmp_path, monkeypatch, split, extra, background):
    kinds = build(tmp_path)
    augmented = split == "train"
    if augmented:  # a pipeline whose effect is known: always flip left-right
        monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A

        A.save(A.Compose([A.HorizontalFlip(p=1.0)]), str(tmp_path / "flip.json"))
        extra = [*extra, "--set", f"augment.albumentations.path={tmp_path / 'flip.json'}"]
    pairs = str(tmp_path / "pairs.jsonl")
    result = cli(
        "data", "inspect", "--dataset", "files", "--set", f"dataset.train={pairs}", "--set", f"dataset.val={pairs}",
        *TINY, *extra, "--split", split, "--n", str(len(kinds)), "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pixels = received(tmp_path / "out")
    assert len(pixels) == len(kinds)
    for (name, expected), image in zip(kinds, pixels, strict=True):
        want = expected(background)
        if augmented:
            want = flipped(want)
        for quadrant, (got, colour) in enumerate(zip(centres(image), want, strict=True)):
            worst = np.abs(got - np.array(colour)).max()
            assert worst <= 2, f"{name} quadrant {quadrant}: got {got.mean(axis=0).round(1)}, viewer shows {colour}"


def test_eight_orientations_are_eight_different_images(tmp_path):
    """The check above can tell orientations apart: each of 1-8 shows the quadrants in another order."""
    shown = set()
    for orientation in ORIENTATIONS:
        write_oriented(tmp_path / "x.jpg", orientation)
        shown.add(tuple(as_shown(tmp_path / "x.jpg")))
    assert len(shown) == 8


@pytest.mark.parametrize("mode", ["F", "I", "LAB"])
def test_modes_without_a_fixed_range_are_refused_naming_the_mode(mode):
    with pytest.raises(DataError, match=f"image mode '{mode}'"):
        to_rgb(Image.new(mode, (4, 4)))


def test_background_names_and_codes():
    assert parse_colour("white") == (255, 255, 255) and parse_colour("#204080") == (32, 64, 128)


def test_a_32_bit_float_image_stops_the_run_before_it_starts(tmp_path):
    for i in range(4):
        quadrants("RGB", [RED, GREEN, BLUE, YELLOW]).save(tmp_path / f"{i}.png")
    Image.fromarray(np.full((SIDE, SIDE), 0.5, np.float32)).save(tmp_path / "float.tiff")
    rows = [{"image_path": f"{i}.png", "caption": f"picture {i}"} for i in range(4)] + [{"image_path": "float.tiff", "caption": "x"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = str(tmp_path / "pairs.jsonl")
    result = cli(
        "run", "--dataset", "files", "--set", f"dataset.train={pairs}", "--set", f"dataset.val={pairs}", *TINY,
        "--fusion", "none", "--batch-size", "2", "--max-steps", "1", "--runs-dir", "runs", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{pairs} line 5: image {tmp_path / 'float.tiff'}: image mode 'F'" in lines[0]
    assert not (tmp_path / "runs").exists()
