"""FSDP as the training engine wraps a method, on two CPU processes (fsdp_toy.py): one step trains,
validation runs through the wrapper on gathered weights, and rank 0 gathers the full weights."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from launch_helpers import REPO, free_port, run

import fsdp_toy

pytestmark = pytest.mark.slow


def test_fsdp_step_validation_and_gather_match_an_unsharded_computation(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "tests" / "engine" / "fsdp_toy.py"), str(tmp_path), "exclude"]
    proc = run(cmd, tmp_path, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["ok"] and r1["ok"], (r0.get("error"), r1.get("error"))
    # The blocks are shard units of their own; the top module's weights belong to the root wrapper.
    assert r0["wrapped"] == ["", "_fsdp_wrapped_module.held.net.blocks.0", "_fsdp_wrapped_module.held.net.blocks.1"]
    assert "gathered" not in r1  # rank0_only: nobody else holds a full copy

    # Independent computation: the same net unsharded, the gradient averaged over both processes'
    # batches (what FSDP's reduce-scatter computes), one AdamW step.
    method = fsdp_toy.BlockMethod()
    assert all(torch.equal(method.state_dict()[k], r0["initial"][k]) for k in r0["initial"])
    reference = copy.deepcopy(method)
    grads = []
    for rank in (0, 1):
        g = torch.Generator().manual_seed(1 + rank)
        hq = torch.rand(1, 3, 2, 16, 16, generator=g) * 2 - 1
        reference.net.zero_grad()
        loss, _ = reference.training_step({"lq": F.avg_pool3d(hq, (1, 2, 2)), "hq": hq})
        loss.backward()
        grads.append([p.grad.clone() for p in reference.net.parameters()])
    for p, g0, g1 in zip(reference.net.parameters(), *grads):
        p.grad = (g0 + g1) / 2
    torch.optim.AdamW(reference.net.parameters(), lr=1e-2).step()
    expected = reference.state_dict()
    assert sorted(r0["gathered"]) == sorted(expected)
    for key in expected:
        torch.testing.assert_close(r0["gathered"][key], expected[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(r0["gathered"][key], r0["initial"][key])
    # Validation inside the wrapper saw the whole trained net on both processes.
    probe = torch.linspace(-1, 1, 3 * 2 * 8 * 8).reshape(1, 3, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(r0["validation"], reference.upscale(probe), rtol=1e-5, atol=1e-6)
    assert torch.equal(r0["validation"], r1["validation"])
