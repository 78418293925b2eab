"""Fixtures of the dedup tests."""

from __future__ import annotations

import pytest

from tests.helpers.dedup_worlds import Worlds, build_worlds, one_faiss_thread


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> Worlds:
    return build_worlds(tmp_path_factory.mktemp("dedup"))


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    with one_faiss_thread():
        yield
