"""The training loop's loss accumulators exist on every device it runs on."""

from __future__ import annotations

import pytest
import torch

from lmtool.train.distributed import accumulator_dtype


@pytest.mark.parametrize(
    ("device", "dtype"), [("cpu", torch.float64), ("cuda", torch.float64), ("mps", torch.float32)]
)
def test_accumulator_dtype_exists_on_the_device(device, dtype):
    """MPS has no float64: a float64 accumulator there would fail on the first step."""
    assert accumulator_dtype(torch.device(device)) == dtype
