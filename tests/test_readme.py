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


@pytest.mark.timeout(300)
def test_the_loop_with_one_pass_epochs_visits_every_image_once_an_epoch(tiny_dataset, tmp_path, monkeypatch):
    """The same loop with the README's one-pass config line, recording the indices: 29 images in batches of 8 give
    4 batches an epoch, every image once and 3 of them (the filled-up last batch) twice, in a new order each epoch."""
    from tagstream.tools.vocab import VocabOptions, build_vocab

    ds = tiny_dataset(29, shard_size=10)  # shards of 10, 10 and 9
    build_vocab(ds, "v1", VocabOptions(min_count=1))
    section = README.read_text().split("## In your own training loop", 1)[1]
    loop, one_pass = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    config_line = next(line for line in loop.splitlines() if line.startswith("config = "))
    assert "one_pass=True" in one_pass and 'sampling="natural"' in one_pass
    code = loop.replace(config_line, one_pass.strip())
    code = code.replace('dataset="ds"', f'dataset="{ds}"').replace(
        "batch_size=64, image_size=224", "batch_size=8, image_size=32"
    )
    for_line = next(line for line in code.splitlines() if line.lstrip().startswith("for images, targets, indices"))
    body = " " * (len(for_line) - len(for_line.lstrip()) + 4)
    code = code.replace(for_line, f"{for_line}\n{body}seen[epoch] += indices.tolist()")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"seen": {0: [], 1: []}}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["state"]["one_pass"] and scope["loader"].sampler.padded == 3
    for epoch in (0, 1):
        seen = scope["seen"][epoch]
        assert len(seen) == 32 and sorted(set(seen)) == list(range(29))  # each image, 3 of them twice
        assert len(set(seen[:24])) == 24 and set(seen[24:]) >= set(range(29)) - set(seen[:24])  # repeats: last batch
    assert scope["seen"][0] != scope["seen"][1]
