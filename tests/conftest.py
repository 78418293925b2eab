"""Shared fixtures. `tiny_dataset(n)` converts n small JPEGs whose colour and tags encode their index."""

from __future__ import annotations

import pytest

from tests.helpers.tiny import TinyDatasets


@pytest.fixture
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> TinyDatasets:
    return TinyDatasets(tmp_path_factory)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Safety net: tests marked `gpu` are skipped without a CUDA GPU (torch is imported only if there are any)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (marked gpu)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """Small forward passes and L-BFGS problems: one torch thread avoids spin-waiting on an oversubscribed machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
