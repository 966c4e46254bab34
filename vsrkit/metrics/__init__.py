"""Video metrics: per-frame image metrics, temporal metrics, per-video and per-dataset aggregation.

Every metric is registered in :data:`vsrkit.registry.METRICS` (see :mod:`vsrkit.builtins`), has
one config dataclass (:mod:`vsrkit.metrics.config`, the keys of ``conf/metric/<name>.yaml``) and
follows :class:`vsrkit.metrics.protocol.Metric`: ``metric(pred, gt=None)`` on ``(T, C, H, W)``
float32 frames in [0, 1] returns ``(T,)`` per-frame scores (``(T - 1,)`` per-pair scores for
temporal metrics).

- weight-free, in-tree: ``psnr``, ``psnry``, ``ssim``, ``ssimc`` (:mod:`.full_reference`, pyiqa/BasicSR
  conventions), ``tof`` and ``ewarp`` with Farneback flow (:mod:`.temporal`);
- local weights: ``ewarp`` with torchvision RAFT; through pyiqa (optional, non-commercial licence,
  :mod:`.pyiqa_adapter`): ``lpips``, ``dists``, ``niqe``, ``musiq``, ``clipiqa``, ``tlpips`` and any
  pyiqa name via ``pyiqa``;
- :mod:`.aggregate`: ``build_metrics``, ``evaluate_pair`` (streams ``(T, H, W, 3)`` uint8 chunks,
  aligns, carries frames across chunks) and ``summarize``.

Importing this package imports nothing heavy; the modules above import torch.
"""
