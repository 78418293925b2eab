"""The README's loader example runs as written (on a tiny dataset, at a small batch and image size)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.timeout(300)
def test_own_training_loop_example_runs(tiny_dataset, tmp_path, monkeypatch):
    from tagstream.tools.vocab import VocabOptions, build_vocab

    ds = tiny_dataset(24, shard_size=10)
    build_vocab(ds, "v1", VocabOptions(min_count=1))
    section = README.read_text().split("## In your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'dataset="ds"' in code and "batch_size=64, image_size=224" in code
    code = code.replace('dataset="ds"', f'dataset="{ds}"').replace(
        "batch_size=64, image_size=224", "batch_size=8, image_size=32"
    )
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["state"]["epoch"] == 1 and scope["loss"].item() > 0
