"""Blur kernels of the Real-ESRGAN / RealBasicVSR family, in torch (float64 maths, float32 out).

Formulas follow BasicSR ``basicsr/data/degradations.py`` (also vendored as
``zhengchen1999/DOVE:finetune/datasets/blur_kernels.py``):

- Gaussian: ``exp(-0.5 x^T S^-1 x)``, ``S = R diag(sx^2, sy^2) R^T``;
- generalized Gaussian: ``exp(-0.5 (x^T S^-1 x)^beta)``;
- plateau: ``1 / (1 + (x^T S^-1 x)^beta)``;
- sinc (circular low-pass): ``omega J1(omega r) / (2 pi r)``, centre ``omega^2 / (4 pi)``.

All kernels are normalised to sum 1.
"""

from __future__ import annotations

import math

import torch

from vsrkit.data import draws
from vsrkit.data.degradations.config import BlurConfig


def _grid(kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=torch.float64)
    y, x = torch.meshgrid(r, r, indexing="ij")
    return x, y


def _quadratic_form(kernel_size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``x^T S^-1 x`` on the kernel grid, ``S`` the rotated covariance."""
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(cov)
    x, y = _grid(kernel_size)
    return inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y


def gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """Bivariate Gaussian kernel ``(k, k)``; isotropic when ``sigma_y`` is None."""
    q = _quadratic_form(kernel_size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    kernel = torch.exp(-0.5 * q)
    return (kernel / kernel.sum()).float()


def generalized_gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float, theta: float,
                                beta: float) -> torch.Tensor:
    """Bivariate generalized Gaussian kernel ``(k, k)``."""
    kernel = torch.exp(-0.5 * _quadratic_form(kernel_size, sigma_x, sigma_y, theta).pow(beta))
    return (kernel / kernel.sum()).float()


def plateau_kernel(kernel_size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> torch.Tensor:
    """Bivariate plateau kernel ``(k, k)``."""
    kernel = 1.0 / (_quadratic_form(kernel_size, sigma_x, sigma_y, theta).pow(beta) + 1.0)
    return (kernel / kernel.sum()).float()


def sinc_kernel(kernel_size: int, omega: float) -> torch.Tensor:
    """Circularly symmetric low-pass (2-D sinc) kernel ``(k, k)`` with cutoff ``omega`` radians."""
    x, y = _grid(kernel_size)
    r = torch.sqrt(x * x + y * y)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    kernel = omega * torch.special.bessel_j1(omega * safe_r) / (2 * math.pi * safe_r)
    kernel = torch.where(r == 0, torch.full_like(r, omega**2 / (4 * math.pi)), kernel)
    return (kernel / kernel.sum()).float()


def _beta(generator: torch.Generator, low: float, high: float) -> float:
    # BasicSR: half the draws in [low, 1], half in [1, high] (so beta = 1, the plain Gaussian,
    # sits in the middle of the distribution whatever the range).
    if draws.uniform(generator, 0.0, 1.0) <= 0.5:
        return draws.uniform(generator, min(low, 1.0), 1.0)
    return draws.uniform(generator, 1.0, max(high, 1.0))


def random_kernel(cfg: BlurConfig, generator: torch.Generator) -> torch.Tensor:
    """Draw a family, a size and parameters from ``cfg``; returns a ``(k, k)`` float32 kernel."""
    family = draws.choice(generator, list(cfg.kernel_list), list(cfg.kernel_prob))
    size = int(draws.choice(generator, list(cfg.kernel_sizes)))
    if family == "sinc":
        if cfg.omega:
            low, high = cfg.omega
        else:  # Real-ESRGAN: this range suits kernels of 7..21 taps
            low, high = (math.pi / 3, math.pi) if size < 13 else (math.pi / 5, math.pi)
        return sinc_kernel(size, draws.uniform(generator, low, high))
    sigma_x = draws.uniform(generator, *cfg.sigma_x)
    if family.endswith("_iso") or family == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = draws.uniform(generator, *cfg.sigma_y)
        theta = draws.uniform(generator, *cfg.rotate_angle)
    if family in ("iso", "aniso"):
        return gaussian_kernel(size, sigma_x, sigma_y, theta)
    if family.startswith("generalized"):
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, _beta(generator, *cfg.beta_gaussian))
    return plateau_kernel(size, sigma_x, sigma_y, theta, _beta(generator, *cfg.beta_plateau))


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a ``(k, k)`` kernel to ``(size, size)`` (both odd, ``size >= k``)."""
    pad = (size - kernel.shape[-1]) // 2
    return torch.nn.functional.pad(kernel, (pad, pad, pad, pad))
