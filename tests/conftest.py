"""Shared test fixtures (kept small)."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-model tests on one intra-op thread, then restore the setting.

    On a 2-core machine shared with other processes, two spinning OpenMP threads make a tiny matmul
    ~100x slower (24 ms instead of 0.24 ms measured); one thread keeps the unit tests in seconds.
    Opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
