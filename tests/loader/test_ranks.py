"""Two ranks over gloo: equal batch counts, each rank drawing only from its own shards, plans gathered."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from tests.helpers.datasets import make_index_dataset


def _rank_main(rank: int, world: int, root: str, init: str, out: str) -> None:
    from tagstream.loader import build_loader
    from tagstream.loader.config import LoaderConfig
    from tagstream.loader.data.dataset import Dataset
    from tagstream.loader.data.vocab import Vocab
    from tagstream.loader.sampling.sampler import RankSampler
    from tagstream.tools.bench.loader_data import decode_index_color

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    result = {}
    for mode in ("train", "eval"):
        config = LoaderConfig(
            dataset=root,
            vocab="v",
            mode=mode,
            batch_size=4,
            image_size=16,
            workers=1,
            threads=1,
            sampling="sqrt",
            seed=3,
        )
        loader = build_loader(config, rank=rank, world=world)
        batches, idx = 0, []
        for batch in loader:
            batches += 1
            assert [decode_index_color(im) for im in batch.images.numpy()] == [i % 512 for i in batch.indices.tolist()]
            idx.append(batch.indices)
            dist.barrier()  # a rank with fewer batches would hang here; the test's timeout catches it
        loader.close()
        mine = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([mine.numel()]))
        gathered = [torch.zeros(int(n), dtype=torch.int64) for n in sizes]
        dist.all_gather(gathered, mine)
        result[mode] = {"batches": batches, "len": len(loader), "gathered": [g.tolist() for g in gathered]}
        if mode == "train":
            ds = Dataset(root)
            sampler = RankSampler.from_config(config, ds, Vocab(ds, "v"), rank=rank, world=world)
            result["owned"] = sampler.owned_ranges().tolist()
            result["plan"] = sampler.plan(0, 0, batches * 4).tolist()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_ranks_over_gloo(tmp_path):
    root = str(make_index_dataset(tmp_path / "ds", n=64, shard_size=8).root)
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "result")
    tmp.spawn(_rank_main, args=(2, root, init, out), nprocs=2, join=True)
    res = [json.load(open(f"{out}.{r}")) for r in range(2)]
    for mode in ("train", "eval"):
        assert res[0][mode]["batches"] == res[1][mode]["batches"] == res[0][mode]["len"] == res[1][mode]["len"]
        assert res[0][mode]["gathered"] == res[1][mode]["gathered"]
    # train: each rank delivered its own plan, drawn only from the image ranges (shards) it owns
    for r in range(2):
        got = np.array(res[r]["train"]["gathered"][r])
        np.testing.assert_array_equal(got, res[r]["plan"])
        assert all(any(lo <= i < hi for lo, hi in res[r]["owned"]) for i in got)
    own0 = {i for lo, hi in res[0]["owned"] for i in range(lo, hi)}
    own1 = {i for lo, hi in res[1]["owned"] for i in range(lo, hi)}
    assert not own0 & own1 and len(own0 | own1) == 64
    assert res[0]["train"]["batches"] == 64 // 2 // 4
    # eval: every image exactly once over the two ranks, in dataset order
    assert res[0]["eval"]["gathered"][0] + res[0]["eval"]["gathered"][1] == list(range(64))
