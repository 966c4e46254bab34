"""The ``vsrkit`` console script: dispatches to one module per subcommand.

``ls`` and ``doctor`` are plain commands; ``infer``, ``train``, ``bench`` and ``eval`` are Hydra
apps (``-m`` sweeps, ``--cfg job``, launchers). A :class:`vsrkit.errors.UserError` becomes one
line on stderr and exit status 2.
"""

from __future__ import annotations

import difflib
import signal
import sys

USAGE = """\
usage: vsrkit <command> [key=value ...]

commands:
  ls        list registered methods, backbone presets, datasets, degradations, metrics
  doctor    versions, GPU, attention backends, plugins loaded or failed
  infer     upscale a video, frames folder, image or folder of videos
  train     train a method
  bench     run methods over a dataset and score them (use -m for sweeps)
  eval      score a prediction folder or file against ground truth
  weights   fetch, verify and locate trained weights (vsrkit weights --help)

examples:
  vsrkit infer input=in.mp4 output=out.mp4      (Real-ESRGAN x4; weights fetched on first use)
  vsrkit infer method=bicubic input=in.mp4 output=out.mp4 scale=4
  vsrkit infer method=sparkvsr input=in.mp4 output=out.mp4 backbone.path=/weights/SparkVSR
  vsrkit train method=sparkvsr data=demo train.max_steps=2 train.output_dir=runs/a
  vsrkit bench -m method=bicubic,lanczos data=vid4-calendar
  vsrkit eval pred=out/ gt=GT/ 'metric=[psnr,ssim]'
  vsrkit infer method=sparkvsr --help   (the method's options, each with its one-line doc)
  vsrkit infer method=bicubic --cfg job (print the composed config)
"""

HYDRA_COMMANDS = ("infer", "train", "bench", "eval")
PLAIN_COMMANDS = ("ls", "doctor", "weights")


class Terminated(BaseException):
    """SIGTERM arrived. Raised in the main thread like Ctrl-C's KeyboardInterrupt, so every writer's
    ``with`` block removes its partial output on the way out (``vsrkit train`` handles both itself:
    it finishes the step and saves a checkpoint)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] in ("-V", "--version"):
        from vsrkit import __version__

        print(f"vsrkit {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    from vsrkit.errors import UserError

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding program): leave its signals alone
        pass
    try:
        if command == "ls":
            from vsrkit.commands.ls import run_ls

            return run_ls(rest)
        if command == "doctor":
            from vsrkit.commands.doctor import run_doctor

            return run_doctor(rest)
        if command == "weights":
            from vsrkit.commands.weights import run_weights

            return run_weights(rest)
        if command in HYDRA_COMMANDS:
            from vsrkit.commands.hydra_app import run_hydra_command

            return run_hydra_command(command, rest)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); partial outputs were removed, finished ones kept.", file=sys.stderr)
        return 130
    except Terminated:
        print("error: stopped by SIGTERM; partial outputs were removed, finished ones kept.", file=sys.stderr)
        return 143
    close = difflib.get_close_matches(command, HYDRA_COMMANDS + PLAIN_COMMANDS, n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    print(f"error: unknown command `{command}`.{hint} Run `vsrkit --help`.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
