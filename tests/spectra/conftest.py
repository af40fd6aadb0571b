"""Shared fixtures of the spectral-math tests: one CPU thread, fixed seeds, float64 helpers."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Run every test on one thread (2 shared cores) with a fixed torch seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator."""
    g = torch.Generator()
    g.manual_seed(1234)
    return g
