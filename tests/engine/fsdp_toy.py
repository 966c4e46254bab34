"""FSDP on CPU (gloo, 2 processes) the way the training engine wraps a method: run by
test_train_fsdp.py through ``torch.distributed.run``.

accelerate only builds FSDP on GPUs, so this wraps the engine's ``_StepModule`` itself with the
arguments accelerate passes (``use_orig_params``, the preset's size-based policy as a partial, made
safe by ``fsdp_wrap_policy``), then runs one training step, a validation call through the wrapper
(``_Call``) and the rank-0 gather used for checkpoints and export. Each process writes
``<out>/rank<r>.pt``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vsrkit.engine.train import _Call, _StepModule, fsdp_wrap_policy  # noqa: E402

# Sizes: head 448 + tail 435 = 883 own parameters, blocks 2320 each. With min_num_params=800 the
# preset policy wraps each block and (its own 883 >= 800) the top module itself.
MIN_NUM_PARAMS = 800


class BlockNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = torch.nn.ModuleList([torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(2)])
        self.tail = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.head(x))
        for block in self.blocks:
            x = x + F.relu(block(x))
        return self.tail(x)


class BlockMethod:
    """Upscales 2x (nearest + residual net); the training step is an MSE against ``hq``."""

    def __init__(self):
        torch.manual_seed(0)
        self.net = BlockNet()

    def upscale(self, lq):
        b, c, t, h, w = lq.shape
        x = F.interpolate(lq.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), scale_factor=2, mode="nearest")
        return (x + self.net(x)).reshape(b, t, c, 2 * h, 2 * w).permute(0, 2, 1, 3, 4)

    def training_step(self, batch):
        loss = F.mse_loss(self.upscale(batch["lq"]), batch["hq"])
        return loss, {"mse": float(loss.detach())}

    def state_dict(self):
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}


def main() -> int:
    out = Path(sys.argv[1])
    exclude = sys.argv[2] == "exclude"
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    method = BlockMethod()
    initial = method.state_dict()
    group = SimpleNamespace(name="main", params=list(method.net.parameters()))
    holder = _StepModule(method, group, {"net": method.net}, pass_group_name=False)
    preset_policy = functools.partial(size_based_auto_wrap_policy, min_num_params=MIN_NUM_PARAMS)
    policy = fsdp_wrap_policy(preset_policy, [method.net]) if exclude else preset_policy
    holder = FSDP(holder, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"))
    wrapped = sorted(name for name, m in holder.named_modules() if isinstance(m, FSDP))
    optimizer = torch.optim.AdamW(holder.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(1 + rank)  # each process its own batch, as DDP/FSDP data shards
    hq = torch.rand(1, 3, 2, 16, 16, generator=g) * 2 - 1
    lq = F.avg_pool3d(hq, (1, 2, 2))
    result = {"wrapped": wrapped}
    try:
        loss, _ = holder({"lq": lq, "hq": hq})
        loss.backward()
        optimizer.step()
        probe = torch.linspace(-1, 1, 3 * 2 * 8 * 8).reshape(1, 3, 2, 8, 8)
        with torch.no_grad():
            result["validation"] = holder(_Call(lambda: method.upscale(probe))).clone()
        with FSDP.summon_full_params(holder, writeback=False, rank0_only=True, offload_to_cpu=True):
            if rank == 0:
                result["gathered"] = method.state_dict()
        result["initial"] = initial
        result["ok"] = True
    except RuntimeError as err:
        result["ok"] = False
        result["error"] = str(err).splitlines()[0]
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
