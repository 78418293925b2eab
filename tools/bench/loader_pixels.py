"""How far our CPU decoder's train crops are from torchvision's RandomResizedCrop on Pillow images: the same
crop windows and flips, resized by torchvision (resized_crop + hflip on the PIL image) and by loader.turbo at
full scale (the exact mode) and with DCT scaling (the default), over random crops; max and mean absolute
difference in levels. `python -m tagstream.tools.bench.loader_pixels --width 1024 --height 768` measures it on
generated photo-like JPEGs of any size (the bench's 500x375 crops never reach 2x 224 px, so never scale)."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any, Sequence

import numpy as np


def _records(source: Any, count: int) -> Sequence[tuple[bytes, int, int]]:
    """(jpeg, width, height) of the first `count` images of a Dataset, or `source` itself if it is a sequence."""
    if isinstance(source, (list, tuple)):
        return source
    from tagstream.loader.data.store import ShardStore

    store = ShardStore(source.root)
    out = []
    for i in range(min(count, len(source))):
        shard, local = store.locate(i)
        w, h = (int(source.index_array(shard, k)[local]) for k in ("width", "height"))
        out.append((store.read_image(i), w, h))
    return out


def pixel_gap(source: Any, *, crops: int = 400, size: int = 224, seed: int = 0) -> dict:
    """Over `crops` random crops (train_params windows and flips) of the images in `source` (a Dataset, or a
    list of (jpeg, width, height)): {mode: {max, mean, scaled}} for mode exact and dct, `scaled` being how
    many crops decoded at a reduced DCT scale (both sides >= 2x size)."""
    import torchvision.transforms.functional as F
    from PIL import Image

    from tagstream.loader.pipeline import turbo
    from tagstream.loader.pipeline.augment import train_params

    records = _records(source, 64)
    out: dict[str, dict] = {m: {"max": 0, "sum": 0.0, "scaled": 0} for m in ("exact", "dct")}
    for position in range(crops):
        data, w, h = records[position % len(records)]
        (x, y, cw, ch), flip = train_params(w, h, seed=seed, epoch=0, rank=0, position=position)
        ref = F.resized_crop(
            Image.open(io.BytesIO(data)).convert("RGB"), y, x, ch, cw, [size, size], F.InterpolationMode.BILINEAR
        )
        ref = np.asarray(F.hflip(ref) if flip else ref).astype(np.int16)
        for mode in out:
            ours = turbo.crop_resize(data, (x, y, cw, ch), size, mirror=flip, dct_scaling=mode == "dct")
            diff = np.abs(ours.astype(np.int16) - ref)
            out[mode]["max"] = max(out[mode]["max"], int(diff.max()))
            out[mode]["sum"] += float(diff.mean())
            out[mode]["scaled"] += mode == "dct" and min(cw, ch) >= 2 * size
    return {
        "crops": crops,
        "size": size,
        **{m: {"max": v["max"], "mean": v["sum"] / crops, "scaled": v["scaled"]} for m, v in out.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    from tagstream.tools.bench.loader_data import encode_jpeg, photo_like

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--crops", type=int, default=400)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    jpegs = [(encode_jpeg(photo_like(rng, a.width, a.height), 90), a.width, a.height) for _ in range(a.images)]
    print(json.dumps(pixel_gap(jpegs, crops=a.crops, size=a.size)))


if __name__ == "__main__":
    main()
