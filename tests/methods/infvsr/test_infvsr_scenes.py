"""Scene cuts and chunk plans against OpenCV and the InfVSR release's rule.

Golden chunk plans were produced by the release's ``diffsynth_wan/scenes.py::scene_batches``
(Kai-Liu001/InfVSR @a5b9342) run with PySceneDetect 0.6.7.1 on the same frames (decoded with
PyAV as RGB); they are written out literally here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsrkit.methods.scenes import FlashFilterMerge, SceneChunker, content_scores, rgb_to_hsv8


def synthetic_frames() -> list[np.ndarray]:
    """70 frames 24x32: red to 25, blue to 52 (a 2-frame yellow flash at 40), then near-black; +-3 noise."""
    rng = np.random.default_rng(0)
    base = [np.array(c, np.uint8) for c in ([200, 40, 40], [30, 160, 220], [250, 250, 20], [10, 10, 10])]
    frames = []
    for i in range(70):
        c = base[0] if i < 25 else base[1] if i < 52 else base[3]
        if i in (40, 41):
            c = base[2]
        f = np.tile(c, (24, 32, 1)).astype(np.int16) + rng.integers(-3, 4, (24, 32, 3))
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


def plan(frames, pieces=(5,), **kwargs):
    chunker = SceneChunker(**kwargs)
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    out, i, k = [], 0, 0
    while i < len(video):
        n = pieces[k % len(pieces)]
        out += chunker.push(video[i:i + n])
        i, k = i + n, k + 1
    out += chunker.finish()
    return [(c.start, c.stop, c.new_scene, c.update_reference) for c in out]


SYNTHETIC_PLAN = [(0, 9, True, True), (9, 21, False, False), (21, 25, False, False), (25, 34, True, True),
                  (34, 40, False, False), (40, 49, True, True), (49, 61, False, False), (61, 70, False, True)]


@pytest.mark.parametrize("pieces", [(1,), (5,), (16, 3, 1)])
def test_synthetic_plan_matches_the_release(pieces):
    assert plan(synthetic_frames(), pieces) == SYNTHETIC_PLAN


def test_without_detection_chunks_are_9_then_12():
    got = plan(synthetic_frames(), (7,), detect=False)
    assert [(a, b) for a, b, _, _ in got] == [(0, 9), (9, 21), (21, 33), (33, 45), (45, 57), (57, 69), (69, 70)]
    assert [n for _, _, n, _ in got] == [True] + [False] * 6
    assert [u for _, _, _, u in got] == [True] + [False] * 6


def test_threshold_option_changes_the_cuts():
    # Scores of the red->blue and blue->yellow changes are far above 27; at 1000 nothing is a cut.
    got = plan(synthetic_frames(), (5,), scene_threshold=1000.0, reference_threshold=1000.0)
    assert [n for _, _, n, _ in got] == [True] + [False] * (len(got) - 1)
    assert [(a, b) for a, b, _, _ in got][:3] == [(0, 9), (9, 21), (21, 33)]


ONEPIECE_PLAN = [(0, 9, True, True), (9, 21, False, False), (21, 33, False, False), (33, 45, False, False),
                 (45, 57, False, False), (57, 69, False, False), (69, 81, False, False), (81, 93, False, False),
                 (93, 100, False, False), (100, 109, True, True), (109, 121, False, False),
                 (121, 133, False, True), (133, 145, False, False), (145, 157, False, False),
                 (157, 169, False, False), (169, 181, False, False)]


@pytest.mark.slow
def test_real_clip_plan_matches_the_release(real_data):
    av = pytest.importorskip("av")
    with av.open(str(real_data / "xinntao_Real-ESRGAN" / "onepiece_demo.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert plan(frames, (16,)) == ONEPIECE_PLAN


def test_hsv_matches_opencv_bit_for_bit():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    img[0, :256] = np.arange(256)[:, None]  # greys, V == R == G == B ties
    img[1, :256, 0] = 255
    img[1, :256, 1] = np.arange(256)
    expected = cv2.cvtColor(np.ascontiguousarray(img[:, :, ::-1]), cv2.COLOR_BGR2HSV)
    got = rgb_to_hsv8(torch.from_numpy(img).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)


def test_content_score_is_pyscenedetects_formula():
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (3, 8, 10), dtype=np.uint8) for _ in range(2))
    ha, hb = rgb_to_hsv8(torch.from_numpy(a)), rgb_to_hsv8(torch.from_numpy(b))
    want = sum(np.abs(hb[c].numpy().astype(int) - ha[c].numpy().astype(int)).sum() / 80 for c in range(3)) / 3
    scores = content_scores(torch.stack([ha, hb]), None)
    assert scores[0] == 0.0 and scores[1].item() == pytest.approx(want, rel=1e-12)


def test_flash_filter_merge_rules():
    # Expected lists checked against PySceneDetect 0.6.7.1 FlashFilter(MERGE, 15).
    f = FlashFilterMerge(15)
    above = {3, 20, 25, 26, 50}
    # 3: within 15 of frame 0, dropped; 20: the first cut; 25, 26: a run shorter than 15, dropped.
    assert [c for i in range(80) for c in f(i, i in above)] == [20, 50]
    f = FlashFilterMerge(15)
    above = {20, 21, 24, 30, 37, 60}
    # 21..37 merge into one cut at the run's last frame 37, reported 15 frames later (at 52).
    got = [(i, c) for i in range(100) for c in f(i, i in above)]
    assert got == [(20, 20), (52, 37), (60, 60)]


def merge_frames() -> list[np.ndarray]:
    """80 frames 8x8 flickering over 20..37 (cuts at 20, 21, 24, 30, 37): the MERGE filter reports the
    merged cut at 37 only at frame 52, so chunks must wait for it."""
    rng = np.random.default_rng(3)
    col = {"r": [200, 40, 40], "b": [30, 160, 220], "g": [40, 200, 60], "y": [250, 250, 20]}
    seq = ["r"] * 20 + ["b"] + ["r"] * 3 + ["g"] * 6 + ["y"] * 7 + ["b"] * 43
    out = []
    for c in seq:
        f = np.tile(np.array(col[c], np.uint8), (8, 8, 1)).astype(np.int16) + rng.integers(-3, 4, (8, 8, 3))
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


MERGE_PLAN = [(0, 9, True, True), (9, 20, False, False), (20, 29, True, True), (29, 37, False, False),
              (37, 46, True, True), (46, 58, False, False), (58, 70, False, False), (70, 80, False, False)]


@pytest.mark.parametrize("pieces", [(1,), (12,)])
def test_late_merged_cut_plan_matches_the_release(pieces):
    assert plan(merge_frames(), pieces) == MERGE_PLAN
