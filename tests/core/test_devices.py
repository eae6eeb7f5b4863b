"""latentgen.devices: a job's share of a GPU's memory when runs share the GPU (gpu_slots sets it)."""

from __future__ import annotations

import pytest
import torch

from latentgen import devices


def test_a_job_plans_with_its_share_of_the_free_device_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (12_000, 80_000))  # (free, total)
    monkeypatch.delenv("LATENTGEN_GPU_SHARE", raising=False)
    assert devices.gpu_share() == 1 and devices.free_device_memory(torch.device("cuda")) == 12_000
    monkeypatch.setenv("LATENTGEN_GPU_SHARE", "4")  # four training runs on one GPU: a quarter each
    assert devices.gpu_share() == 4 and devices.free_device_memory(torch.device("cuda")) == 3_000


@pytest.mark.parametrize("value", ["0", "-2", "half"])
def test_a_bad_share_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("LATENTGEN_GPU_SHARE", value)
    with pytest.raises(ValueError, match="LATENTGEN_GPU_SHARE must be a positive integer"):
        devices.gpu_share()
