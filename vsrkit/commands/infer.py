"""``vsrkit infer``: upscale a video, frames folder, image or folder of videos."""

from __future__ import annotations

import sys
from pathlib import Path

from vsrkit.errors import UserError, VideoReadError


def run(cfg) -> None:
    from vsrkit.engine.build import build_method, hydra_choice, random_weights_note, to_dataclass
    from vsrkit.engine.inference import WindowRunner, apply_overrides, resolve_device
    from vsrkit.engine.run_infer import parse_position, summary_line, upscale_file
    from vsrkit.engine.streaming import check_stream_settings
    from vsrkit.io import check_output, list_inputs

    method_name, backbone_name = hydra_choice("method"), hydra_choice("backbone")
    engine_cfg = to_dataclass(cfg.engine, "engine")
    io_cfg = to_dataclass(cfg.io, "io")
    dist_cfg = to_dataclass(cfg.distributed, "distributed")
    if cfg.max_frames is not None and (not isinstance(cfg.max_frames, int) or cfg.max_frames < 1):
        raise UserError(f"`max_frames` must be an integer >= 1 or null. Got {cfg.max_frames}.")
    parse_position(cfg.start, "start")  # a malformed range fails before anything loads
    parse_position(cfg.end, "end")
    pairs = list_inputs(cfg.input, cfg.output)
    batch = len(pairs) > 1
    from vsrkit.engine.geometry import check_output_size

    for _, dst in pairs:
        check_output(dst, io_cfg.codec)
        check_output_size(io_cfg, dst)
    if cfg.skip_existing and cfg.overwrite:
        raise UserError("`skip_existing=true` keeps finished outputs and `overwrite=true` replaces them; pass one.")
    if not cfg.overwrite and not cfg.skip_existing:
        existing = [dst for _, dst in pairs if Path(dst).exists()]
        if existing:
            raise UserError(f"output `{existing[0]}` exists ({len(existing)} of {len(pairs)} outputs do); "
                            f"pass overwrite=true to replace it, or skip_existing=true to keep it (resume a batch).")
    method = build_method(cfg, method_name, backbone_name, cfg.scale)
    check_stream_settings(method, engine_cfg)
    spec = apply_overrides(method.window_spec(), engine_cfg.window, engine_cfg.overlap, engine_cfg.tile,
                           engine_cfg.tile_overlap)
    # Several processes (accelerate launch / torchrun): one clip split, or inputs dealt (engine/distributed.py).
    from vsrkit.engine import distributed

    procs = distributed.join(engine_cfg.device, dist_cfg.timeout_minutes)
    device = procs.device if procs is not None else resolve_device(engine_cfg.device)
    keyframes_for = None
    if spec.uses_keyframes:
        from vsrkit.engine.run_infer import keyframes_from_config

        keyframes_for = keyframes_from_config(cfg.keyframes, scale=spec.scale, device=device,
                                              padded_length=spec.padded_length)
    method.load(device, None)  # None: the backbone preset's dtype (backbone.dtype) decides
    runner = WindowRunner(method, spec, device, blend=engine_cfg.blend, seed=engine_cfg.seed)
    weights_note = random_weights_note(cfg.get("backbone"))
    split_frames = procs is not None and (dist_cfg.split == "frames" or (dist_cfg.split == "auto" and len(pairs) == 1))
    if procs is not None and not split_frames:
        total, pairs = len(pairs), distributed.deal(pairs, procs.rank, procs.world)
        print(f"process {procs.rank} of {procs.world}: {len(pairs)} of {total} inputs")
    if cfg.skip_existing:
        from vsrkit.engine.batch import unfinished

        pairs, finished = unfinished(pairs)
        if finished:
            print(f"skipped {len(finished)} finished output(s) (first: {finished[0][1]}); {len(pairs)} to do")
    # In a batch, an input that cannot be read must not cost the others: it is reported, the
    # batch goes on, and the run ends with an error naming it. A split run stays all-or-nothing,
    # since its processes meet at every file and one going on alone would leave the others waiting.
    go_on = batch and not split_frames
    unreadable = []
    for src, dst in pairs:
        common = dict(io_cfg=io_cfg, overwrite=cfg.overwrite, max_frames=cfg.max_frames,
                      decode_chunk=engine_cfg.decode_chunk, keyframes_for=keyframes_for, start=cfg.start, end=cfg.end)
        try:
            if split_frames:
                stats = distributed.upscale_file_split(procs, runner, Path(src), Path(dst), config=dist_cfg, **common)
            else:
                stats = upscale_file(runner, Path(src), Path(dst), **common)
        except VideoReadError as err:
            if not go_on:
                raise
            print(f"error: {err} No output for it; going on with the other inputs.", file=sys.stderr, flush=True)
            unreadable.append(src)
            continue
        if stats is not None:  # None: a process of a split run other than the first (which writes)
            print(summary_line(stats, [weights_note] if weights_note else []))
    if unreadable:
        others = f" (and {len(unreadable) - 1} more, listed above)" if len(unreadable) > 1 else ""
        raise UserError(f"{len(unreadable)} of {len(pairs)} inputs could not be read: {unreadable[0]}{others}. "
                        f"The other outputs are written; fix or remove those inputs and rerun with "
                        f"skip_existing=true to do only what is missing.")
