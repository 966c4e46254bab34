"""Every user mistake ends in one line starting `error:` and exit status 2 (issue 9, item 9)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest


def vsrkit(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True, cwd=cwd)


def vsrkit_patched(patch: str, *args) -> subprocess.CompletedProcess:
    """`vsrkit ...` in a process where ``patch`` (Python) ran first: failures the OS would cause."""
    code = textwrap.dedent(patch) + f"\nimport sys\nfrom vsrkit.cli import main\nsys.exit(main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout[-1000:] + out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    return lines[0]


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture
def clip(real_data) -> Path:
    return real_data / "zhengchen1999_DOVE/002.mp4"


def test_missing_output_and_input(clip, tmp_path):
    line = one_error_line(vsrkit("infer", "method=bicubic", f"input={clip}"))
    assert line == "error: `vsrkit infer` needs `output=`, e.g. `vsrkit infer in.mp4 out.mp4`."
    line = one_error_line(vsrkit("infer", "method=bicubic"))
    assert line == "error: `vsrkit infer` needs `input=` and `output=`, e.g. `vsrkit infer in.mp4 out.mp4`."


def test_positional_input_and_output_as_users_type_them(clip, tmp_path):
    out = vsrkit("infer", str(clip), str(tmp_path / "o.mp4"), "method=bicubic", "scale=1", "max_frames=2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert frame_count(tmp_path / "o.mp4") == 2
    line = one_error_line(vsrkit("infer", str(clip), str(tmp_path / "p.mp4"), "extra"))
    assert line.startswith("error: unexpected argument `extra` for `vsrkit infer`")
    line = one_error_line(vsrkit("infer", str(clip), f"input={clip}", f"output={tmp_path / 'q.mp4'}"))
    assert line == f"error: `{clip}` and `input=` both give the input; give it once."


def test_paths_with_spaces_commas_quotes_and_non_ascii(clip, tmp_path):
    folder = tmp_path / "my clips, 2024"
    folder.mkdir()
    source = folder / "plage d'été [1].mp4"
    shutil.copy(clip, source)
    out = vsrkit("infer", "method=bicubic", "scale=1", "max_frames=2", f"input={source}",
                 f"output={folder / 'sortie ü, x.mp4'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert frame_count(folder / "sortie ü, x.mp4") == 2


def test_plus_key_is_checked_like_any_key(clip, tmp_path):
    line = one_error_line(vsrkit("infer", "method=bicubic", f"input={clip}", f"output={tmp_path / 'o.mp4'}", "+foo=1"))
    assert line.startswith("error: unknown key `foo` (from `+foo=1`): vsrkit's configs take no new keys")
    line = one_error_line(vsrkit("infer", "method=bicubic", f"input={clip}", f"output={tmp_path / 'o.mp4'}",
                                 "+engine.windw=4"))
    assert "Did you mean `engine.window`?" in line
    out = vsrkit("infer", "method=bicubic", "scale=1", f"input={clip}", f"output={tmp_path / 'o.mp4'}",
                 "+max_frames=1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert frame_count(tmp_path / "o.mp4") == 1
    assert not (tmp_path / "p.mp4").exists()


def test_resolution_change_mid_stream(tmp_path):
    import numpy as np

    parts = []
    for h, w in ((32, 48), (48, 64)):
        path = tmp_path / f"{h}.h264"
        with av.open(str(path), "w", format="h264") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for _ in range(3):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")))
            container.mux(stream.encode(None))
        parts.append(path.read_bytes())
    joined = tmp_path / "joined.h264"
    joined.write_bytes(parts[0] + parts[1])
    line = one_error_line(vsrkit("infer", "method=bicubic", f"input={joined}", f"output={tmp_path / 'o.mp4'}"))
    assert "changes resolution at frame 3: 64x48 after 48x32" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["32.h264", "48.h264", "joined.h264"]


def test_read_only_output_folder(clip, tmp_path):
    # Tests run as root here, so a chmod'ed folder would not refuse: the OS error is injected where
    # FFmpeg opens the file, with the errno and file name the kernel gives.
    patch = """
        import errno, av
        real_open = av.open
        def refusing(file, mode="r", **kwargs):
            if "w" in mode and str(file).startswith(%r):  # the output folder only
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, mode, **kwargs)
        av.open = refusing
    """
    target = tmp_path / "o.mp4"
    line = one_error_line(vsrkit_patched(patch % str(tmp_path), "infer", "method=bicubic", f"input={clip}",
                                         f"output={target}"))
    assert line == (f"error: cannot write {target}: permission denied; choose an output folder you can write to. "
                    f"Nothing partial was left behind.")
    assert list(tmp_path.iterdir()) == []


def test_disk_full(clip, tmp_path):
    patch = """
        import errno
        import vsrkit.io.writer as writer
        def full(self, frames, pts=None):
            raise OSError(errno.ENOSPC, "No space left on device", str(self._partial))
        writer.VideoWriter.write = full
    """
    target = tmp_path / "o.mkv"
    line = one_error_line(vsrkit_patched(patch, "infer", "method=bicubic", "io.codec=ffv1", f"input={clip}",
                                         f"output={target}"))
    assert line == (f"error: cannot write {target}: the disk is full; free space or write the output elsewhere. "
                    f"Nothing partial was left behind.")
    assert list(tmp_path.iterdir()) == []


def test_missing_keyframe_image_is_called_missing(tmp_path):
    from vsrkit.engine.keyframes import _image_files
    from vsrkit.errors import UserError

    with pytest.raises(UserError, match=r"entry .*nope\.png does not exist; give existing image files or a folder"):
        _image_files([str(tmp_path / "nope.png")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"notes\.txt is not an image file"):
        _image_files([str(tmp_path / "notes.txt")])


def test_output_type_that_cannot_be_written_is_refused_before_work(clip, tmp_path):
    line = one_error_line(vsrkit("infer", "method=bicubic", f"input={clip}", f"output={tmp_path / 'o.ts'}"))
    assert line.startswith(f"error: Output {tmp_path / 'o.ts'}: a .ts file cannot hold h264 video")
    assert list(tmp_path.iterdir()) == []


def test_every_video_type_the_writer_can_hold_is_written(clip, tmp_path):
    out = vsrkit("infer", "method=bicubic", "scale=1", "max_frames=2", f"input={clip}", f"output={tmp_path / 'o.flv'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert frame_count(tmp_path / "o.flv") == 2
