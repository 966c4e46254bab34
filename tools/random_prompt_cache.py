"""Put a random prompt embedding in a prompt cache, for speed benchmarks and training demos at full
size with random weights (no text encoder needed; the compute is the same as with a real one).

    python tools/random_prompt_cache.py --preset ltx-video-2b --dir /tmp/vsrkit-prompts
    python tools/bench_method.py ... --set backbone.prompt_cache_dir=/tmp/vsrkit-prompts

The file is what vsrkit's cache holds (``<dir>/<encoder>_<length>/<sha256(text)>.safetensors``,
keys ``prompt_embedding (1, L, D)`` and ``attention_mask (1, L)``). The values are Gaussian noise
with the scale of T5-XXL outputs (std 0.15); the mask marks one real token for the empty prompt
(T5's end-of-sequence token) and all tokens otherwise. Never use it for real results: an existing
file is left alone unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_random_embeddings(preset_name: str, cache_dir: Path, texts: list[str], seed: int = 0,
                            overwrite: bool = False) -> list[tuple[Path, bool]]:
    """Write a random embedding for each text where ``PromptEncoder(preset, cache_dir)`` looks.

    Returns ``(path, written)`` per text (``written`` False: an existing file was kept).

    Raises:
        KeyError: Unknown preset.
    """
    import torch
    from safetensors.torch import save_file

    from vsrkit.backbones.presets import get_preset
    from vsrkit.backbones.text import PromptEncoder

    preset = get_preset(preset_name)
    encoder = PromptEncoder(preset, cache_dir)
    generator = torch.Generator().manual_seed(seed)
    done = []
    for text in texts:
        path = encoder.cache_file(text)
        if path.exists() and not overwrite:
            done.append((path, False))
            continue
        length, dim = preset.text.max_length, preset.text.dim
        embeds = torch.randn(1, length, dim, generator=generator) * 0.15
        mask = torch.ones(1, length, dtype=torch.int64)
        if text == "" and preset.text.uses_mask:
            mask[:, 1:] = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"prompt_embedding": embeds.to(torch.bfloat16).float(), "attention_mask": mask}, str(path),
                  metadata={"text": text, "random": "true"})
        done.append((path, True))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="backbone preset, e.g. ltx-video-2b")
    parser.add_argument("--dir", required=True, type=Path, help="prompt cache folder (backbone.prompt_cache_dir)")
    parser.add_argument("--text", action="append", default=None, help="prompt text (repeatable; default: '')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    try:
        done = write_random_embeddings(args.preset, args.dir, args.text or [""], args.seed, args.overwrite)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    for path, written in done:
        print(f"{'wrote' if written else 'kept'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
