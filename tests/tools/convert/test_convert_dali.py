"""Every image conversion stores, odd inputs included, decodes in DALI with the size the index records."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tagstream.loader.data import format as fmt
from tagstream.loader.data.dataset import Dataset
from tagstream.tools.convert.engine import convert

dali = pytest.importorskip("nvidia.dali")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (60, 30), (200, 30, 30)).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    from tests.helpers.convert_inputs import MIXED_OPTS, make_mixed_source

    root = tmp_path_factory.mktemp("dali_src")
    src = make_mixed_source(root)
    (root / "rot.jpg").write_bytes(exif_rotated_jpeg())
    with src.open("a") as f:
        f.write('{"image": "rot.jpg", "tags": ["rot"]}\n')
    out = root / "ds"
    summary = convert(src, out, shard_size=3, image_options=MIXED_OPTS)
    assert summary.reencoded.get("exif_orientation") == 1 and summary.reencoded["images"] >= 4
    return out


def stored(root) -> tuple[list[bytes], list[tuple[int, int]]]:

    ds = Dataset(root)
    images, sizes = [], []
    for k in range(len(ds.shards)):
        env = fmt.open_env(ds.shard_path(k))
        with env.begin() as txn:
            images += [fmt.unpack_record(v)["image"] for _, v in txn.cursor()]
        env.close()
        sizes += list(zip(ds.index_array(k, "height").tolist(), ds.index_array(k, "width").tolist()))
    return images, sizes


@pytest.mark.parametrize("device", ["cpu", pytest.param("mixed", marks=pytest.mark.gpu)])
def test_dali_decodes_every_stored_image(odd_dataset, device):
    if device == "mixed":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
    from nvidia.dali import fn, pipeline_def, types

    images, sizes = stored(odd_dataset)
    arrays = [np.frombuffer(b, np.uint8) for b in images]

    @pipeline_def(batch_size=len(arrays), num_threads=1, device_id=0 if device == "mixed" else None)
    def decode():
        return fn.decoders.image(
            fn.external_source(source=lambda: arrays, batch=True), device=device, output_type=types.RGB
        )

    pipe = decode()
    pipe.build()
    (out,) = pipe.run()
    if device == "mixed":
        out = out.as_cpu()
    shapes = [tuple(out[i].shape()) for i in range(len(arrays))]
    assert shapes == [(h, w, 3) for h, w in sizes]
