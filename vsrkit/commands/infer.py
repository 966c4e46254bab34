"""``vsrkit infer``: upscale a video, frames folder, image or folder of videos."""

from __future__ import annotations

from pathlib import Path

from vsrkit.errors import UserError


def run(cfg) -> None:
    from vsrkit.engine.build import build_method, hydra_choice, random_weights_note, to_dataclass
    from vsrkit.engine.inference import WindowRunner, apply_overrides, resolve_device
    from vsrkit.engine.run_infer import parse_position, upscale_file
    from vsrkit.io import check_output, list_inputs

    method_name, backbone_name = hydra_choice("method"), hydra_choice("backbone")
    engine_cfg = to_dataclass(cfg.engine, "engine")
    io_cfg = to_dataclass(cfg.io, "io")
    if cfg.max_frames is not None and (not isinstance(cfg.max_frames, int) or cfg.max_frames < 1):
        raise UserError(f"`max_frames` must be an integer >= 1 or null. Got {cfg.max_frames}.")
    parse_position(cfg.start, "start")  # a malformed range fails before anything loads
    parse_position(cfg.end, "end")
    pairs = list_inputs(cfg.input, cfg.output)
    for _, dst in pairs:
        check_output(dst, io_cfg.codec)
    if not cfg.overwrite:
        existing = [dst for _, dst in pairs if Path(dst).exists()]
        if existing:
            raise UserError(f"output `{existing[0]}` exists ({len(existing)} of {len(pairs)} outputs do); "
                            f"pass overwrite=true to replace it.")
    method = build_method(cfg, method_name, backbone_name, cfg.scale)
    spec = apply_overrides(method.window_spec(), engine_cfg.window, engine_cfg.overlap, engine_cfg.tile,
                           engine_cfg.tile_overlap)
    device = resolve_device(engine_cfg.device)
    keyframes_for = None
    if spec.uses_keyframes:
        from vsrkit.engine.run_infer import keyframes_from_config

        keyframes_for = keyframes_from_config(cfg.keyframes, scale=spec.scale, device=device)
    method.load(device, None)  # None: the backbone preset's dtype (backbone.dtype) decides
    runner = WindowRunner(method, spec, device, blend=engine_cfg.blend, seed=engine_cfg.seed)
    weights_note = random_weights_note(cfg.get("backbone"))
    for src, dst in pairs:
        stats = upscale_file(runner, Path(src), Path(dst), io_cfg=io_cfg, overwrite=cfg.overwrite,
                             max_frames=cfg.max_frames, decode_chunk=engine_cfg.decode_chunk,
                             keyframes_for=keyframes_for, start=cfg.start, end=cfg.end)
        notes = stats.notes + ([weights_note] if weights_note else [])
        print(f"{stats.output}: {stats.frames} frames, {stats.seconds:.2f} s ({stats.seconds_per_frame * 1000:.1f} ms/frame)"
              + "".join(f"; {note}" for note in notes))
