"""The command line as users type it: `python -m vsrkit.cli ...` in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest


def vsrkit(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True, cwd=cwd)


def frame_times(path: Path) -> list:
    with av.open(str(path)) as c:
        return [round(float(f.time), 6) for f in c.decode(video=0)]


def probe(path: Path) -> tuple:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        return (v.codec_context.width, v.codec_context.height, frames, c.streams.video[0].average_rate,
                [a.codec_context.name for a in c.streams.audio])


def test_ls_imports_no_heavy_module():
    code = ("import sys; from vsrkit.cli import main; main(['ls']); "
            "heavy = [m for m in ('torch', 'diffusers', 'av', 'transformers', 'hydra') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "bicubic" in out.stdout and "lanczos" in out.stdout


def test_help_and_unknown_command():
    assert "vsrkit infer method=" in vsrkit("--help").stdout
    out = vsrkit("infre")
    assert out.returncode == 2 and "Did you mean infer?" in out.stderr


def test_cfg_job_prints_the_composed_config():
    out = vsrkit("infer", "method=lanczos", "input=a.mp4", "output=b.mp4", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "lobes: 3" in out.stdout and "codec: h264" in out.stdout


@pytest.fixture
def bad_inputs(tmp_path, real_data):
    text = tmp_path / "fake.mp4"
    text.write_text("not a video")
    data = (real_data / "zhengchen1999_DOVE/003.mp4").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 2 // 5])
    empty = tmp_path / "empty"
    empty.mkdir()
    good = real_data / "zhengchen1999_DOVE/003.mp4"
    return {"missing": tmp_path / "missing.mp4", "text": text, "truncated": truncated, "empty": empty, "good": good}


@pytest.mark.parametrize("case,args,expected", [
    ("missing", [], "does not exist"),
    ("text", [], "fake.mp4"),
    ("truncated", [], "truncated.mp4"),
    ("empty", [], "empty"),
    ("good", ["method=bicubc"], "Did you mean `bicubic`?"),
    ("good", ["scale=0"], "`scale` must be an integer >= 1. Got 0."),
    ("good", ["io.codec=vp9"], "`io.codec` must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(bad_inputs, tmp_path, case, args, expected):
    out = vsrkit("infer", "method=bicubic", f"input={bad_inputs[case]}", f"output={tmp_path / 'o.mp4'}", *args)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert expected in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_output_equal_to_input_is_refused(real_data, tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes((real_data / "zhengchen1999_DOVE/003.mp4").read_bytes())
    before = src.read_bytes()
    out = vsrkit("infer", "method=bicubic", f"input={src}", f"output={src}", "overwrite=true")
    assert out.returncode == 2 and "error: " in out.stderr
    assert src.read_bytes() == before


def test_existing_output_is_kept_without_overwrite(real_data, tmp_path):
    dst = tmp_path / "o.mp4"
    dst.write_bytes(b"keep me")
    out = vsrkit("infer", "method=bicubic", f"input={real_data / 'zhengchen1999_DOVE/003.mp4'}", f"output={dst}")
    assert out.returncode == 2 and "overwrite=true" in out.stderr
    assert dst.read_bytes() == b"keep me"


@pytest.mark.slow
def test_bicubic_odd_size_clip(real_data, tmp_path):
    out = vsrkit("infer", "method=bicubic", f"input={real_data / 'zhengchen1999_DOVE/002.mp4'}",
                 f"output={tmp_path / 'o.mp4'}", "scale=4")
    assert out.returncode == 0, out.stderr
    assert probe(tmp_path / "o.mp4")[:3] == (1272, 720, 32)


def test_bicubic_keeps_decoded_frames_rate_and_audio(real_data, tmp_path):
    # Header says 79 frames, 71 decode; the first decoded frame is not a keyframe.
    out = vsrkit("infer", "method=bicubic", f"input={real_data / 'sczhou_Upscale-A-Video/old_animation_1.mp4'}",
                 f"output={tmp_path / 'o.mp4'}", "scale=2")
    assert out.returncode == 0, out.stderr
    assert probe(tmp_path / "o.mp4")[:3] == (640, 480, 71)
    assert probe(tmp_path / "o.mp4")[4] == ["aac"]
    # The input's average rate counts the 8 frames the decoder drops, so compare timestamps instead.
    assert frame_times(tmp_path / "o.mp4") == frame_times(real_data / "sczhou_Upscale-A-Video/old_animation_1.mp4")


@pytest.mark.slow
def test_fractional_rate_and_audio_with_max_frames(real_data, tmp_path):
    out = vsrkit("infer", "method=lanczos", f"input={real_data / 'xinntao_Real-ESRGAN/onepiece_demo.mp4'}",
                 f"output={tmp_path / 'o.mkv'}", "scale=2", "max_frames=24", "io.codec=ffv1")
    assert out.returncode == 0, out.stderr
    width, height, frames, _, audio = probe(tmp_path / "o.mkv")
    assert (width, height, frames, audio) == (1280, 960, 24, ["aac"])
    # MKV stores milliseconds; the frame times still match the source's to the millisecond.
    source_times = frame_times(real_data / "xinntao_Real-ESRGAN/onepiece_demo.mp4")[:24]
    assert frame_times(tmp_path / "o.mkv") == pytest.approx(source_times, abs=1e-3)


def test_ntsc_rate_survives_into_mp4(real_data, tmp_path):
    from fractions import Fraction

    out = vsrkit("infer", "method=bicubic", f"input={real_data / 'xinntao_Real-ESRGAN/onepiece_demo.mp4'}",
                 f"output={tmp_path / 'o.mp4'}", "scale=1", "max_frames=30")
    assert out.returncode == 0, out.stderr
    assert probe(tmp_path / "o.mp4") == (640, 480, 30, Fraction(1199, 50), ["aac"])


def test_real_preset_without_weights_is_one_line_before_anything_loads(real_data, tmp_path):
    import time

    started = time.perf_counter()
    # Before the fix this built a random 5B model for 10+ minutes: the timeout turns that into a failure.
    out = subprocess.run([sys.executable, "-m", "vsrkit.cli", "infer", "method=sparkvsr",
                          f"input={real_data / 'zhengchen1999_DOVE/002.mp4'}", f"output={tmp_path / 'o.mp4'}",
                          "max_frames=9"], capture_output=True, text=True, timeout=90)
    assert out.returncode == 2, out.stdout + out.stderr
    assert time.perf_counter() - started < 60
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: preset `cogvideox1.5-5b-i2v` has no weights"), out.stderr
    assert "backbone.random_weights=true" in lines[0]
    assert not list(tmp_path.iterdir())


def _cut_faststart(src: Path, dst: Path) -> Path:
    whole = dst.with_name("whole.mp4")
    with av.open(str(src)) as source, av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = whole.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_input_is_said_in_log_and_summary_or_refused(real_data, tmp_path):
    cut = _cut_faststart(real_data / "zhengchen1999_DOVE/002.mp4", tmp_path / "half.mp4")
    out = vsrkit("infer", "method=bicubic", "scale=1", f"input={cut}", f"output={tmp_path / 'kept.mp4'}")
    assert out.returncode == 0, out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{tmp_path / 'kept.mp4'}: 17 frames")
    assert "truncated: decoding stopped early" in summary and "17 frames decoded, the container declares 32" in summary
    assert probe(tmp_path / "kept.mp4")[2] == 17
    refused = vsrkit("infer", "method=bicubic", "scale=1", f"input={cut}", f"output={tmp_path / 'no.mp4'}",
                     "io.on_truncated=error")
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: Input {cut} is truncated"), refused.stderr
    assert "17 frames decoded, the container declares 32" in lines[0]
    assert not (tmp_path / "no.mp4").exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_damaged_input_keeps_its_timing_and_is_said_or_refused(real_data, tmp_path):
    # One destroyed packet (frame 11 of DOVE 002) costs that frame only: the other 31 are upscaled
    # and keep their timestamps, so the gap stays a gap and the clip keeps its length.
    src = real_data / "zhengchen1999_DOVE/002.mp4"
    bad = tmp_path / "bad.mp4"
    with av.open(str(src)) as source, av.open(str(bad), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        packets = [p for p in source.demux(source.streams.video[0]) if p.dts is not None]
        for index, packet in enumerate(packets):
            if index == 12:
                broken = av.Packet(bytes(packet)[: packet.size // 3])
                broken.pts, broken.dts, broken.time_base = packet.pts, packet.dts, packet.time_base
                packet = broken
            packet.stream = stream
            out.mux(packet)
    run = vsrkit("infer", "method=bicubic", "scale=1", f"input={bad}", f"output={tmp_path / 'kept.mkv'}",
                 "io.codec=ffv1")
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{tmp_path / 'kept.mkv'}: 31 frames")
    assert "damaged: 1 packet could not be decoded" in summary and "31 frames decoded, the container declares 32" \
        in summary
    with av.open(str(tmp_path / "kept.mkv")) as container:
        stream = container.streams.video[0]
        seconds = [float(f.pts * stream.time_base) for f in container.decode(stream)]
    assert len(seconds) == 31 and seconds[0] == 0 and seconds[-1] == pytest.approx(31 / 16, abs=1e-3)
    assert sum(b - a > 1.5 / 16 for a, b in zip(seconds, seconds[1:])) == 1  # the one missing frame
    refused = vsrkit("infer", "method=bicubic", "scale=1", f"input={bad}", f"output={tmp_path / 'no.mkv'}",
                     "io.codec=ffv1", "io.on_truncated=error")
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: Input {bad} is damaged: 1 packet"), refused.stderr
    assert not (tmp_path / "no.mkv").exists()


def test_an_unreadable_input_does_not_stop_a_batch(real_data, tmp_path):
    import shutil

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "c.mp4"):
        shutil.copy(real_data / "zhengchen1999_DOVE/002.mp4", videos / name)
    (videos / "b.mp4").write_text("a download that went wrong\n")
    out = tmp_path / "out"
    run = vsrkit("infer", "method=bicubic", "scale=1", f"input={videos}", f"output={out}", "max_frames=2")
    assert run.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mp4"]
    assert [line.split(":")[0] for line in run.stdout.splitlines() if "frames," in line] == [str(out / "a.mp4"),
                                                                                              str(out / "c.mp4")]
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, run.stderr
    assert f"{videos / 'b.mp4'} is not a readable video" in lines[0] and "going on with the other inputs" in lines[0]
    assert lines[1].startswith(f"error: 1 of 3 inputs could not be read: {videos / 'b.mp4'}. The other outputs")
    # Fixed, the rerun does only what is missing.
    shutil.copy(real_data / "zhengchen1999_DOVE/002.mp4", videos / "b.mp4")
    rerun = vsrkit("infer", "method=bicubic", "scale=1", f"input={videos}", f"output={out}", "max_frames=2",
                   "skip_existing=true")
    assert rerun.returncode == 0, rerun.stderr
    assert "skipped 2 finished output(s)" in rerun.stdout and f"{out / 'b.mp4'}: 2 frames" in rerun.stdout
    # One input alone still stops at once, in one line.
    (tmp_path / "bad.mp4").write_text("no\n")
    single = vsrkit("infer", "method=bicubic", f"input={tmp_path / 'bad.mp4'}", f"output={tmp_path / 'y.mp4'}")
    assert single.returncode == 2
    assert [line for line in single.stderr.splitlines() if line.strip()] == [
        f"error: Video {tmp_path / 'bad.mp4'} is not a readable video (Invalid data found when processing input); "
        f"it may be truncated or not a video."]


def test_frames_folder_output_keeps_the_input_names(real_data, tmp_path):
    import shutil

    from PIL import Image

    frames_in = tmp_path / "in"
    frames_in.mkdir()
    for name in ("001.png", "002.png", "010.png"):
        shutil.copy(real_data / "yhjo09_VSR-DUF_Vid4/calendar/LR_BDx4" / name, frames_in / name)
    out = vsrkit("infer", "method=bicubic", "scale=2", f"input={frames_in}", f"output={tmp_path / 'out'}")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["001.png", "002.png", "010.png"]
    # Each output is its own input upscaled (PIL bicubic as an independent reference, 1 level of rounding).
    for name in ("001.png", "010.png"):
        lr = Image.open(frames_in / name).convert("RGB")
        ref = np.asarray(lr.resize((lr.width * 2, lr.height * 2), Image.BICUBIC)).astype(int)
        assert np.abs(np.asarray(Image.open(tmp_path / "out" / name).convert("RGB")).astype(int) - ref).mean() < 0.5


def test_infer_help_shows_the_chosen_method_options_with_their_docs():
    out = vsrkit("infer", "method=sparkvsr", "--help")
    assert out.returncode == 0, out.stderr
    page = out.stdout
    assert page.startswith("usage: vsrkit infer [INPUT OUTPUT]")
    from vsrkit.plugins import setup_registries
    from vsrkit.registry import METHODS

    setup_registries()
    assert f"  method=sparkvsr   (one of: {', '.join(sorted(METHODS.names()))})" in page
    assert "method (sparkvsr) options (SparkVSRConfig):" in page
    # One-line docs come from the config dataclasses' Args (text written here from SparkVSRConfig's docstring).
    assert '  method.ref_guidance_scale=1.0    Keyframe ("reference-free") guidance `s`.' in page.splitlines()
    assert "  backbone.family=cogvideox        `cogvideox`, `wan` or `ltx`; must match the preset's family." in page.splitlines()
    assert "backbone.random_weights=false" in page and "engine.blend=linear" in page
    assert "output=???                       mirrors the input kind; never equal to the input" in page
    assert "schema/" not in page and "hydra/" not in page
    lanczos = vsrkit("infer", "method=lanczos", "-h").stdout
    assert "method.lobes=3" in lanczos and "method.ref_guidance_scale" not in lanczos


def test_cfg_job_names_the_method():
    out = vsrkit("infer", "method=lanczos", "input=a.mp4", "output=b.mp4", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "# vsrkit infer: method=lanczos, backbone=none"


def test_every_config_field_has_a_help_line():
    from vsrkit.backbones.config import BackboneConfig
    from vsrkit.builtins import register_builtins
    from vsrkit.commands.help import field_docs
    from vsrkit.engine.keyframes import KeyframesConfig
    from vsrkit.engine.settings import EngineConfig, IOConfig
    from vsrkit.engine.train_config import TrainConfig
    from vsrkit.registry import METHODS

    register_builtins()
    classes = [BackboneConfig, EngineConfig, IOConfig, KeyframesConfig, TrainConfig]
    classes += [METHODS.get_config(name) for name in METHODS.names() if METHODS.get_config(name) is not None]
    for cls in classes:
        import dataclasses

        docs = field_docs(cls)
        assert sorted(docs) == sorted(f.name for f in dataclasses.fields(cls)), cls.__name__
        assert all(docs.values()), (cls.__name__, [k for k, v in docs.items() if not v])


def test_console_output_is_one_summary_line_and_no_temporary_names(real_data, tmp_path):
    out = vsrkit("infer", "method=bicubic", "scale=1", "max_frames=3", f"input={real_data / 'zhengchen1999_DOVE/002.mp4'}",
                 f"output={tmp_path / 'o.mp4'}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{tmp_path / 'o.mp4'}: 3 frames, " + out.stdout.split(": 3 frames, ", 1)[1].strip()]
    assert ".partial" not in out.stdout + out.stderr and "%|" not in out.stderr  # no bar off a terminal


def test_fused_vae_line_only_on_cuda(caplog, monkeypatch):
    import logging

    from vsrkit.backbones import BackboneConfig, build_backbone, kernels

    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="vsrkit.backbones.build"):
        build_backbone(BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32"), "cpu")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("attention" in m for m in messages)
    assert not any("fused VAE kernels" in m for m in messages)
