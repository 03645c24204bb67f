import pytest

from quanta.parity import ParityConfig


@pytest.fixture
def tiny_cfg() -> ParityConfig:
    """A run that trains in well under a second."""
    return ParityConfig(
        n_tasks=6,
        n_bits=10,
        k=3,
        widths=(4, 16),
        steps=40,
        batch_size=64,
        test_per_task=16,
        eval_points=6,
        threads=1,
    )
