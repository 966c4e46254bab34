"""TurboVSR training on the tiny LTX preset (CPU): tasks, losses, shortcut teacher, frozen FFNs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.engine.ema import EMA
from vsrkit.methods.turbovsr.config import TurboVSRConfig
from vsrkit.methods.turbovsr.method import TurboVSRMethod, shortcut_target, upsample_frames

TINY = BackboneConfig(preset="ltx-video-2b-tiny", family="ltx", dtype="fp32")


@pytest.fixture(scope="module")
def method() -> TurboVSRMethod:
    m = TurboVSRMethod(TurboVSRConfig(), backbone=TINY, scale=4)
    m.setup_training(torch.device("cpu"))
    return m


@pytest.fixture
def configure(method):
    saved = dataclasses.replace(method.config)

    def apply(**changes):
        method.config = dataclasses.replace(method.config, **changes)

    yield apply
    method.config = saved
    method._ema = None


def _batch(step=0, t=9, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    hq = torch.rand(b, 3, t, 64, 64, generator=g) * 2 - 1
    lq = torch.nn.functional.avg_pool3d(hq, (1, 4, 4))
    return {"hq": hq, "lq": lq, "prompt": [""] * b, "index": torch.arange(b), "step": step, "is_image": torch.zeros(b)}


class _ModelCalls:
    """Wraps the model: records keyword inputs; ``edit`` may change the output."""

    def __init__(self, model, edit=None):
        self.model, self.edit, self.calls = model, edit, []

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        self.calls.append({"args": args, **kwargs, "grad": torch.is_grad_enabled()})
        return self.edit(out) if self.edit is not None else out


def test_trainable_parameters_freeze_the_ffns_and_keep_the_adapter(method):
    trainable = {id(p) for p in method.trainable_parameters()}
    ffn = {id(p) for block in method.backbone.transformer.transformer_blocks for p in block.ff.parameters()}
    assert ffn and not (ffn & trainable)
    assert all(id(p) in trainable for p in method.model.adapter.parameters())
    assert all(id(p) in trainable for p in method.backbone.transformer.transformer_blocks[0].attn1.parameters())
    assert not any(p.requires_grad for p in method.backbone.vae.model.parameters())
    assert set(method.state_dict()) == {n for n, p in method.model.named_parameters() if id(p) in trainable}
    assert method.training_data_spec() == {"num_frames": 49, "hr_size": (1024, 1024), "frame_multiple": 8,
                                           "frame_offset": 1}


def test_step_trains_only_what_trains_and_is_reproducible(method):
    batch = _batch(step=0)
    loss, logs = method.training_step(batch)
    assert loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in method.model.named_parameters() if p.grad is not None}
    assert "adapter.cond_proj.weight" in grads and grads["adapter.cond_proj.weight"].abs().sum() > 0
    assert not any(".ff." in n for n in grads)
    method.model.zero_grad(set_to_none=True)
    again, _ = method.training_step(_batch(step=0))
    assert torch.equal(loss.detach(), again.detach())
    other, _ = method.training_step(_batch(step=2))
    assert not torch.equal(loss.detach(), other.detach())


def test_steps_alternate_image_and_video_tasks(method, configure, monkeypatch):
    configure(sc_fraction=0.0, cond_dropout=0.0)
    rec = _ModelCalls(method.model)
    monkeypatch.setattr(method, "model", rec)
    for step in range(4):
        _, logs = method.training_step(_batch(step=step))
        assert logs["image_task"] == float(step % 2 == 1)
    frames = [c["args"][0].shape[2] for c in rec.calls]
    assert frames == [2, 1, 2, 1]  # 9-frame clips: 2 latent frames; image steps: frame 0 alone
    assert [c["first_clean"] is not None for c in rec.calls] == [True, False, True, False]
    _, logs = method.training_step(_batch(step=1, t=1))
    assert logs["image_task"] == 1.0


def test_video_step_conditions_on_the_clean_hr_first_frame_without_loss_there(method, configure, monkeypatch):
    configure(sc_fraction=0.0, cond_dropout=0.0, cond_noise_max_step=0)
    batch = _batch(step=0)
    base, _ = method.training_step(batch)
    rec = _ModelCalls(method.model)
    monkeypatch.setattr(method, "model", rec)
    x0 = method.encode(batch["hq"])
    lr = method.encode(upsample_frames(batch["lq"], (64, 64), "bicubic").clamp(-1, 1))
    rec.edit = lambda out: torch.cat([out[:, :, :1] + 100.0, out[:, :, 1:]], dim=2)
    perturbed, _ = method.training_step(batch)
    call = rec.calls[-1]
    assert torch.equal(call["args"][0][:, :, :1], x0[:, :, :1])  # frame 0 is the clean HR latent
    assert bool(call["first_clean"].all()) and bool(call["cond_keep"].all())
    assert torch.allclose(call["condition"], lr, atol=1e-6)  # no condition noise at max step 0
    assert torch.allclose(perturbed, base, atol=1e-6)  # frame 0 carries no loss
    rec.edit = lambda out: torch.cat([out[:, :, :1], out[:, :, 1:] + 1.0], dim=2)
    assert not torch.allclose(method.training_step(batch)[0], base, atol=1e-3)


def test_condition_noise_and_dropout(method, configure, monkeypatch):
    rec = _ModelCalls(method.model)
    monkeypatch.setattr(method, "model", rec)
    batch = _batch(step=0, b=4)
    lr = method.encode(upsample_frames(batch["lq"], (64, 64), "bicubic").clamp(-1, 1))
    asked = []

    def schedule(name):
        # abar = 0.64 for steps 0..300 and NaN beyond: a step above the maximum would show.
        asked.append(name)
        return torch.cat([torch.full((301,), 0.64, dtype=torch.float64),
                          torch.full((700,), float("nan"), dtype=torch.float64)])

    monkeypatch.setattr("vsrkit.methods.turbovsr.method.ddpm_alphas_cumprod", schedule)
    configure(sc_fraction=0.0, cond_dropout=0.0, cond_noise_max_step=300, cond_noise_schedule="scaled_linear")
    method.training_step(batch)
    assert asked == ["scaled_linear"]
    noise = (rec.calls[-1]["condition"] - 0.8 * lr) / 0.6  # sqrt(abar) z + sqrt(1 - abar) n
    assert torch.isfinite(noise).all()
    assert abs(noise.mean().item()) < 0.15 and abs(noise.std().item() - 1.0) < 0.15
    configure(sc_fraction=0.0, cond_dropout=1.0)
    method.training_step(batch)
    call = rec.calls[-1]
    assert not bool(call["cond_keep"].any()) and not bool(call["first_clean"].any())  # plain text-to-video


def test_shortcut_samples_use_two_half_steps_of_the_teacher(method, configure, monkeypatch):
    configure(sc_fraction=1.0, cond_dropout=0.0)
    rec = _ModelCalls(method.model)
    monkeypatch.setattr(method, "model", rec)
    _, logs = method.training_step(_batch(step=1))  # an image step
    assert logs["shortcut_fraction"] == 1.0 and "loss_shortcut" in logs and "loss_flow" not in logs
    teacher = [c for c in rec.calls if not c["grad"]]
    student = [c for c in rec.calls if c["grad"]]
    assert len(teacher) == 2 and len(student) == 1
    d = student[0]["step_size"]
    sigma = student[0]["args"][1]
    assert torch.allclose(teacher[0]["step_size"], d / 2) and torch.allclose(teacher[1]["step_size"], d / 2)
    assert torch.allclose(teacher[1]["args"][1], sigma - d / 2)
    assert bool((sigma - d >= -1e-6).all())
    sizes = {round(v * 128) for v in d.tolist()}
    assert all(any(s == b * 2**k for b in (1, 3, 5, 7) for k in range(1, 8)) for s in sizes)
    configure(sc_fraction=0.0)
    rec.calls.clear()
    _, logs = method.training_step(_batch(step=1))
    assert "loss_flow" in logs and "loss_shortcut" not in logs
    assert [c["step_size"].tolist() for c in rec.calls] == [[1 / 128, 1 / 128]]  # flow matching: finest step


def test_teacher_is_the_ema_model(method, configure):
    params = method.trainable_parameters()
    ema = EMA(params, decay=0.9)
    with torch.no_grad():
        for s in ema.shadow:
            s.add_(0.05)  # the average differs from the live weights
    method.attach_ema(ema)
    g = torch.Generator().manual_seed(3)
    c = method.backbone.vae.latent_channels
    x = torch.randn(1, c, 2, 2, 2, generator=g)
    cond = torch.randn(1, c, 2, 2, 2, generator=g)
    embeds, mask = method._prompt("")
    kwargs = dict(step_size=torch.tensor([0.25]), condition=cond, first_clean=torch.tensor([True]),
                  rope_scale=method._rope_scale())
    sigma = torch.tensor([0.75])
    with torch.no_grad():
        from_teacher = method._teacher()(x, sigma, embeds, mask, **kwargs)
        live = method.model(x, sigma, embeds, mask, **kwargs)
        with ema.swapped_in():
            averaged = method.model(x, sigma, embeds, mask, **kwargs)

        def predict(xx, s, d):
            return method._teacher()(xx, s, embeds, mask, step_size=d, condition=cond, rope_scale=method._rope_scale())

        target = shortcut_target(predict, x, sigma, torch.tensor([0.5]), clip=4.0)
        with ema.swapped_in():
            v1 = method.model(x, sigma, embeds, mask, step_size=torch.tensor([0.25]), condition=cond,
                              rope_scale=method._rope_scale())
            v2 = method.model((x - 0.25 * v1).clamp(-4, 4), sigma - 0.25, embeds, mask, step_size=torch.tensor([0.25]),
                              condition=cond, rope_scale=method._rope_scale())
    assert torch.allclose(from_teacher, averaged, atol=1e-6)
    assert not torch.allclose(from_teacher, live, atol=1e-4)
    # The shortcut target for a step of 2d is the mean of two d steps of the EMA model.
    assert torch.allclose(target, ((v1 + v2) / 2).clamp(-4, 4), atol=1e-5)


def test_engine_hands_its_ema_to_the_method(tmp_path):
    from vsrkit.engine.train import run_training
    from vsrkit.engine.train_config import TrainConfig

    class Recorder:
        def __init__(self):
            self.net, self.ema = None, None

        def setup_training(self, device):
            self.net = torch.nn.Linear(2, 2)

        def trainable_parameters(self):
            return list(self.net.parameters())

        def attach_ema(self, ema):
            self.ema = ema

        def training_step(self, batch):
            return self.net(batch["hq"].mean(dim=(2, 3, 4))[:, :2]).square().mean(), {}

        def state_dict(self):
            return self.net.state_dict()

        def load_state_dict(self, state):
            self.net.load_state_dict(state)

        def export(self, directory):
            pass

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"hq": torch.zeros(3, 1, 4, 4), "lq": torch.zeros(3, 1, 2, 2), "prompt": "", "is_image": True,
                    "index": i}

    for decay, expect in ((0.9, True), (None, False)):
        method = Recorder()
        config = TrainConfig(output_dir=str(tmp_path / str(decay)), max_steps=1, num_workers=0, mixed_precision="no",
                             ema_decay=decay, progress_bar=False, tensorboard=False, checkpoint_every=0)
        run_training(method, Data(), config)
        assert (method.ema is not None) == expect
        if expect:
            assert method.ema.params[0] is method.net.weight
