"""The edits near copies go through on social media, for calibrating de-duplication: large crops,
small rotations, colour filters, text and logo overlays, heavy JPEG, grey and mirror images. Each is a
seeded function of (image, rng); parameters are drawn per image within the stated range."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from tagstream.tools.dedup.quality import cropper

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]

WORDS = ("summer", "vibes", "repost", "follow", "best", "day", "ever", "love", "insta", "travel", "2024", "goals")


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """5-15 degrees either way, same canvas, black corners (as an app's rotate leaves them)."""
    angle = float(rng.uniform(5, 15) * rng.choice((-1, 1)))
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))


def colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation each scaled by 0.6-1.4, hue turned by up to 18 degrees."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(0.6, 1.4)))
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(-13, 14))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A solid logo badge in a random corner (15-25 % of the short side) and a line of caption text."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    side = min(img.size)
    logo = int(side * rng.uniform(0.15, 0.25))
    x = int(rng.choice((0, img.width - logo)))
    y = int(rng.choice((0, img.height - logo)))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw.rounded_rectangle((x, y, x + logo - 1, y + logo - 1), radius=max(1, logo // 5), fill=colour)
    draw.ellipse((x + logo // 4, y + logo // 4, x + 3 * logo // 4, y + 3 * logo // 4), fill=(255, 255, 255))
    text = " ".join(rng.choice(WORDS, size=3).tolist())
    font = ImageFont.load_default(size=max(8, int(img.height * rng.uniform(0.08, 0.12))))
    ty = int(img.height * rng.uniform(0.55, 0.8))
    draw.text((int(img.width * 0.05), ty), text, font=font, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return img


def jpeg30(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=30)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def grey(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.convert("L").convert("RGB")


def flip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def crop_jitter_jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Three at once: a 10-25 % crop, a colour filter, JPEG q30."""
    return jpeg30(colour_jitter(cropper(0.10, 0.25)(img, rng), rng), rng)


# family -> (edit, heavy): heavy = the edits a 64-bit pHash is known to miss (the question)
TRANSFORMS: dict[str, tuple[Edit, bool]] = {
    "crop 10-40%": (cropper(0.10, 0.40), True),
    "rotate 5-15deg": (rotate, True),
    "colour jitter": (colour_jitter, True),
    "text+logo overlay": (overlay, True),
    "crop+jitter+jpeg": (crop_jitter_jpeg, True),
    "jpeg q30": (jpeg30, False),
    "grey": (grey, False),
    "flip": (flip, False),
}
