"""The YFCC join index against its oracle, a dict filled with setdefault: random keys with duplicates,
non-ASCII and lone surrogates, with the real hash and with hashes forced to collide; offsets past 4 GiB."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tagstream.tools.convert.inputs import join_index
from tagstream.tools.convert.inputs.join_index import JoinIndex

ALPHABET = ["1", "2", "a", "é", "日", "\U0001f600", "\udcff", "\ud800", ".", "/"]
HASHES = {
    "blake2b": None,
    "constant": lambda data: bytes(8),  # every key collides with every other
    "length": lambda data: len(data).to_bytes(8, "little"),  # keys of one length collide
}


def random_keys(rng: random.Random, n: int) -> list[str]:
    pool = [""] + ["".join(rng.choices(ALPHABET, k=rng.randint(1, 4))) for _ in range(n)]
    return [rng.choice(pool) for _ in range(n)]  # drawn with replacement: duplicates


def random_target(rng: random.Random, kind: str, i: int) -> tuple:
    if kind == "file":
        return "file", f"{rng.choice(ALPHABET)}/{i}.{rng.choice(['jpg', 'png'])}"
    return (
        "tar",
        f"tars/{rng.randrange(3)}.tar",
        rng.randrange(1 << 40),
        rng.randrange(1 << 34),
        rng.choice(["jpg", "png"]),
    )


def add(index: JoinIndex, key: str, target: tuple) -> None:
    if target[0] == "file":
        index.add_file(key, target[1])
    else:
        index.add_member(key, *target[1:])


@pytest.mark.parametrize("kind", ["file", "tar"])
@pytest.mark.parametrize("hashing", list(HASHES))
@pytest.mark.parametrize("seed", [0, 1])
def test_lookups_equal_a_dict_filled_with_setdefault(monkeypatch, kind, hashing, seed):
    if HASHES[hashing] is not None:
        monkeypatch.setattr(join_index, "key_hash", HASHES[hashing])
    rng = random.Random(seed)
    keys = random_keys(rng, 300)
    index, oracle = JoinIndex(kind), {}
    for i, key in enumerate(keys):
        target = random_target(rng, kind, i)
        add(index, key, target)
        oracle.setdefault(key, target)
    assert len(index.freeze()) == len(keys) and len(oracle) < len(keys)
    queries = keys + random_keys(rng, 300) + ["absent", "é" * 9]
    assert [index.get(q) for q in queries] == [oracle.get(q) for q in queries]


def test_empty_index_and_misuse():
    assert JoinIndex("tar").freeze().get("5000") is None
    with pytest.raises(ValueError, match=r"expected one of \('file', 'tar'\)"):
        JoinIndex("folder")
    index = JoinIndex("file")
    with pytest.raises(ValueError, match="add_member on a join index of kind 'file'"):
        index.add_member("1", "a.tar", 0, 1, "jpg")
    index.add_file("1", "1.jpg")
    with pytest.raises(RuntimeError, match="not frozen"):
        index.get("1")
    index.freeze()
    with pytest.raises(RuntimeError, match="frozen"):
        index.add_file("2", "2.jpg")
    assert (index.get("1"), index.get("2")) == (("file", "1.jpg"), None)


def test_narrow_keeps_offsets_past_4_gib():
    assert join_index._narrow(np.array([0, (1 << 32) - 1])).format == "I"
    wide = join_index._narrow(np.array([0, 1 << 40, 1 << 32]))  # the largest not last (an argsort order)
    assert wide.tolist() == [0, 1 << 40, 1 << 32] and wide.itemsize == 8


@pytest.mark.parametrize("kind", ["file", "tar"])
def test_a_saved_index_maps_back_to_the_same_lookups(tmp_path, kind):
    rng = random.Random(3)
    index = JoinIndex(kind)
    keys = [str(rng.randrange(500)) for _ in range(2000)] + ["é", "\ud800", ""]
    for i, key in enumerate(keys):
        if kind == "file":
            index.add_file(key, f"d/{key}-{i}.jpg")
        else:
            index.add_member(key, f"t{i % 3}.tar", 512 * i, 100 + i, "jpg" if i % 2 else "png")
    index.freeze()
    with pytest.raises(RuntimeError, match="freeze"):
        JoinIndex(kind).save(tmp_path / "unfrozen")
    loaded = JoinIndex.load(index.save(tmp_path / "saved"))
    assert len(loaded) == len(index) == len(keys)
    for key in set(keys) | {"absent", "ée"}:
        assert loaded.get(key) == index.get(key), key
