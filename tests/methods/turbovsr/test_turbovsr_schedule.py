"""TurboVSR's step grid, step-size selection, shortcut targets and training draws (no model).

Golden values are worked out by hand from the formulas (SD3 shift ``s t / (1 + (s - 1) t)``,
step sizes ``b 2^k / 128`` for the bases 1, 3, 5, 7) or computed independently with numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vsrkit.methods.turbovsr.method import (
    base_step_sizes,
    ddpm_alphas_cumprod,
    euler_step,
    is_image_step,
    sampling_sigmas,
    select_step_sizes,
    shift_sigma,
    shortcut_target,
    step_size_set,
    unshift_sigma,
)


def test_sd3_shift_values_and_inverse():
    # s = 3: tau 0.5 -> 1.5 / 2 = 0.75; tau 0.25 -> 0.75 / 1.5 = 0.5; tau 0.75 -> 2.25 / 2.5 = 0.9.
    assert shift_sigma(0.5, 3.0) == pytest.approx(0.75)
    assert shift_sigma(0.25, 3.0) == pytest.approx(0.5)
    assert shift_sigma(0.75, 3.0) == pytest.approx(0.9)
    assert shift_sigma(0.3, 1.0) == pytest.approx(0.3)
    for tau in (0.0, 0.1, 0.37, 0.8, 1.0):
        assert unshift_sigma(shift_sigma(tau, 3.0), 3.0) == pytest.approx(tau)


def test_four_step_grid_is_shifted_towards_noise():
    assert sampling_sigmas(4, 3.0) == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0])
    assert sampling_sigmas(2, 1.0) == pytest.approx([1.0, 0.5, 0.0])


def test_step_size_set_is_the_union_of_the_dyadic_bases():
    assert base_step_sizes(3, 128) == pytest.approx([3 / 128, 6 / 128, 12 / 128, 24 / 128, 48 / 128, 96 / 128])
    assert base_step_sizes(1, 8) == pytest.approx([1 / 8, 2 / 8, 4 / 8, 1.0])
    members = {1, 2, 4, 8, 16, 32, 64, 128, 3, 6, 12, 24, 48, 96, 5, 10, 20, 40, 80, 7, 14, 28, 56, 112}
    assert step_size_set(128, [1, 3, 5, 7]) == pytest.approx(sorted(m / 128 for m in members))


def test_nearest_step_selection_on_the_shifted_four_step_grid():
    sigmas = sampling_sigmas(4, 3.0)
    lengths = [sigmas[i] - sigmas[i + 1] for i in range(4)]  # 0.1, 0.15, 0.25, 0.5
    sizes = step_size_set(128, [1, 3, 5, 7])
    chosen = select_step_sizes(lengths, sizes)
    # 0.1 * 128 = 12.8 -> 12 (14 is 1.2 away); 19.2 -> 20; 32 and 64 are members.
    assert chosen == pytest.approx([12 / 128, 20 / 128, 32 / 128, 64 / 128])
    assert select_step_sizes(lengths, sizes, "exact") == pytest.approx(lengths)


@pytest.mark.parametrize("steps,shift", [(1, 3.0), (2, 3.0), (3, 3.0), (4, 3.0), (6, 3.0), (10, 3.0), (4, 6.0)])
def test_selected_step_sizes_are_valid_nearest_neighbours(steps, shift):
    sizes = step_size_set(128, [1, 3, 5, 7])
    sigmas = sampling_sigmas(steps, shift)
    lengths = np.diff(-np.asarray(sigmas))
    chosen = select_step_sizes(list(lengths), sizes)
    grid = np.asarray(sizes)
    for length, size in zip(lengths, chosen):
        assert any(math.isclose(size, s) for s in sizes), "selection must return a trained step size"
        assert abs(size - length) <= np.abs(grid - length).min() + 1e-12


def test_powers_of_two_alone_leave_large_gaps_the_extra_bases_fill():
    # The paper's motivation: with only 1/128 * 2^k, a length of 0.75 snaps to 0.5 or 1.
    only_dyadic = step_size_set(128, [1])
    assert min(abs(s - 0.75) for s in only_dyadic) == pytest.approx(0.25)
    assert min(abs(s - 0.75) for s in step_size_set(128, [1, 3, 5, 7])) == pytest.approx(0.0)


def test_euler_step_moves_towards_data():
    x0, noise = torch.tensor([2.0]), torch.tensor([-1.0])
    x = 0.5 * x0 + 0.5 * noise  # sigma 0.5
    v = noise - x0  # the exact velocity of the straight path
    assert torch.allclose(euler_step(x, v, 0.5, 0.0), x0)
    assert torch.allclose(euler_step(x, v, 0.5, 1.0), noise)


def _toy_teacher(calls):
    def predict(x, sigma, step):
        calls.append((x.clone(), sigma.clone(), step.clone()))
        return x * sigma.reshape(-1, 1) + step.reshape(-1, 1) * 10.0

    return predict


def test_shortcut_target_is_the_mean_of_two_half_steps():
    calls = []
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    sigma = torch.tensor([0.9, 0.5])
    d = torch.tensor([0.5, 0.25])  # the shortcut of size 2 * (d / 2)
    target = shortcut_target(_toy_teacher(calls), x, sigma, d, clip=100.0)
    half = d / 2
    v1 = x * sigma[:, None] + half[:, None] * 10.0
    x_mid = x - half[:, None] * v1
    v2 = x_mid * (sigma - half)[:, None] + half[:, None] * 10.0
    assert torch.allclose(target, (v1 + v2) / 2)
    assert len(calls) == 2
    assert torch.allclose(calls[0][2], half) and torch.allclose(calls[1][2], half)
    assert torch.allclose(calls[1][1], sigma - half)


def test_shortcut_target_clips_and_keeps_clean_latents():
    calls = []
    x = torch.tensor([[10.0, 0.0]])
    target = shortcut_target(_toy_teacher(calls), x, torch.tensor([1.0]), torch.tensor([0.5]), clip=4.0,
                             keep_clean=lambda t: torch.cat([torch.full_like(t[:, :1], 7.0), t[:, 1:]], dim=1))
    assert target.abs().max() <= 4.0
    assert calls[1][0][0, 0] == 7.0  # the second half step sees the clean value put back


def test_image_and_video_steps_alternate():
    assert [is_image_step(s, 0.5) for s in range(6)] == [False, True, False, True, False, True]
    assert not any(is_image_step(s, 0.0) for s in range(10))
    assert all(is_image_step(s, 1.0) for s in range(10))
    assert sum(is_image_step(s, 0.25) for s in range(100)) == 25


def test_ddpm_condition_noise_schedules():
    betas = np.linspace(1e-4, 0.02, 1000)
    expected = np.concatenate([[1.0], np.cumprod(1 - betas)])
    abar = ddpm_alphas_cumprod("linear").numpy()
    assert abar[0] == 1.0  # step 0: no noise
    assert np.allclose(abar, expected, rtol=1e-12)
    assert abar[300] == pytest.approx(0.3964, abs=1e-4)  # the paper's strongest condition noise (numpy: 0.39642)
    sd = np.concatenate([[1.0], np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)])
    assert np.allclose(ddpm_alphas_cumprod("scaled_linear").numpy(), sd, rtol=1e-12)
