"""Outputs never replace a file that appeared while a run was writing; leftovers of dead runs go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vsrkit.io.publish as publish_module
from vsrkit.errors import UserError
from vsrkit.io import FramesWriter, VideoWriter, open_source, read_image, write_image
from vsrkit.io.publish import partial_path, remove_stale_partials


@pytest.fixture(params=["renameat2", "fallback"])
def mechanism(request, monkeypatch):
    """Both ways to publish: Linux renameat2(RENAME_NOREPLACE), and the hard-link / mkdir fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(publish_module, "_renameat2", None)
    elif publish_module._renameat2 is None:
        pytest.skip("no renameat2 on this system")
    return request.param


def _frames(count=2, size=16):
    return np.random.default_rng(count).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _only_visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_video_that_appears_while_writing_is_kept(tmp_path, mechanism):
    target = tmp_path / "out.mkv"
    with pytest.raises(UserError) as err:
        with VideoWriter(target, width=16, height=16, fps=25, codec="ffv1") as writer:
            writer.write(_frames())
            target.write_bytes(b"a user's file")  # another job or a copy lands on the name meanwhile
    kept = tmp_path / f"out.vsrkit-{os.getpid()}.mkv"
    assert str(err.value) == (f"Output {target} appeared while this run was writing it (another job, or a copy?); it "
                              f"was not replaced, and this run's output is {kept}. Pass overwrite=true to replace "
                              f"outputs.")
    assert target.read_bytes() == b"a user's file"
    assert np.array_equal(open_source(kept).read(), _frames())
    assert _only_visible(tmp_path) == sorted([target.name, kept.name])


def test_frames_folder_that_appears_while_writing_is_kept(tmp_path, mechanism):
    target = tmp_path / "frames"
    with pytest.raises(UserError, match="appeared while this run was writing it"):
        with FramesWriter(target) as writer:
            writer.write(_frames())
            target.mkdir()  # even an empty folder is not replaced
            (target / "mine.txt").write_text("keep me")
    assert _only_visible(target) == ["mine.txt"]
    assert _only_visible(tmp_path / f"frames.vsrkit-{os.getpid()}") == ["000000.png", "000001.png"]


def test_image_that_appears_while_writing_is_kept(tmp_path, mechanism, monkeypatch):
    target = tmp_path / "x.png"
    real_publish = publish_module.publish

    def late(partial, final, overwrite):
        Path(final).write_bytes(b"theirs")
        return real_publish(partial, final, overwrite)

    monkeypatch.setattr("vsrkit.io.images.publish", late)
    with pytest.raises(UserError, match="appeared while this run was writing it"):
        write_image(target, _frames(1)[0])
    assert target.read_bytes() == b"theirs"
    assert np.array_equal(read_image(tmp_path / f"x.vsrkit-{os.getpid()}.png"), _frames(1)[0])


def test_overwrite_replaces(tmp_path, mechanism):
    target = tmp_path / "out.mkv"
    target.write_bytes(b"old")
    with VideoWriter(target, width=16, height=16, fps=25, codec="ffv1", overwrite=True) as writer:
        writer.write(_frames())
    assert np.array_equal(open_source(target).read(), _frames())
    assert _only_visible(tmp_path) == ["out.mkv"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "out.mp4"
    host = partial_path(target).name.split(".partial-")[1].rsplit("-", 1)[0]
    dead = tmp_path / f".out.mp4.partial-{host}-{_dead_pid()}.mp4"
    dead_folder = tmp_path / f".out.mp4.partial-{host}-{_dead_pid()}"
    live = tmp_path / f".out.mp4.partial-{host}-{os.getppid()}.mp4"  # our parent runs
    elsewhere = tmp_path / f".out.mp4.partial-otherhost-{_dead_pid()}.mp4"  # another machine's: unknown
    other_output = tmp_path / f".other.mp4.partial-{host}-{_dead_pid()}.mp4"
    for path in (dead, live, elsewhere, other_output):
        path.write_bytes(b"x")
    dead_folder.mkdir()
    (dead_folder / "000000.png").write_bytes(b"x")
    with VideoWriter(target, width=16, height=16, fps=25, codec="ffv1") as writer:
        writer.write(_frames())
    assert _only_visible(tmp_path) == sorted([target.name, live.name, elsewhere.name, other_output.name])
    assert remove_stale_partials(tmp_path / "other.mp4") == [other_output]


def test_output_that_appears_during_inference_is_kept(tmp_path, real_data):
    # The whole data path: a method that takes a while, and a file landing on the output meanwhile.
    import torch

    from vsrkit.engine.inference import WindowRunner
    from vsrkit.engine.run_infer import upscale_file
    from vsrkit.engine.settings import IOConfig
    from vsrkit.methods.protocol import WindowSpec

    target = tmp_path / "out.mp4"

    class Nearest:
        def upscale(self, lq, context):
            target.write_bytes(b"user copy")
            return lq.repeat_interleave(2, -1).repeat_interleave(2, -2)

    runner = WindowRunner(Nearest(), WindowSpec(scale=2), torch.device("cpu"))
    with pytest.raises(UserError, match=f"Output {target} appeared while this run was writing it"):
        upscale_file(runner, real_data / "zhengchen1999_DOVE/002.mp4", target, io_cfg=IOConfig(), overwrite=False,
                     max_frames=2, decode_chunk=2, progress=False)
    assert target.read_bytes() == b"user copy"
