"""What every vsrkit metric is: the contract the aggregator and ``vsrkit eval|bench`` rely on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch stays out of `import vsrkit.metrics`
    import torch


@runtime_checkable
class Metric(Protocol):
    """A metric built as ``MetricClass(config)`` from its registered config dataclass.

    Class attributes:
        name: Registry name (``metric=[<name>]``).
        higher_is_better: Direction of the score (pyiqa-backed metrics read it from pyiqa).
        needs_gt: Full-reference: ``gt`` frames are required.
        temporal: Scores consecutive frame pairs: ``T`` frames give ``T - 1`` values, and the
            aggregator prepends the previous chunk's last frame to each chunk.

    Optional attributes:
        info: ``dict`` of facts that qualify the numbers (flow backend, luma definition), stored
            with the scores.
        report_scales: ``{derived_key: factor}``: extra per-video keys reported as ``mean * factor``
            (``ewarp`` -> ``ewarp_x1000``).
    """

    name: str
    higher_is_better: bool
    needs_gt: bool
    temporal: bool

    def __call__(self, pred: "torch.Tensor", gt: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Score ``pred`` (and ``gt``), both ``(T, C, H, W)`` float32 in [0, 1], C = 3 (RGB) or 1.

        Returns:
            ``(T,)`` float64 per-frame scores, or ``(T - 1,)`` per-pair scores if ``temporal``.
        """
        ...
