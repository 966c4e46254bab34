"""Docstrings of vsrkit.backbones list exactly the arguments that exist (style guide rule 7)."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

MODULES = ["config", "presets", "runtime", "text", "loading", "convert", "build", "streaming",
           "cogvideox", "wan", "ltx"]


def documented_args(doc: str) -> list[str] | None:
    if "Args:" not in doc:
        return None
    block = doc.split("Args:")[1]
    block = re.split(r"\n\s*(Returns|Raises|Yields|Attributes):", block)[0]
    indent = min(len(m.group(1)) for m in re.finditer(r"^( +)\S", block, flags=re.M))
    return [m.group(1).lstrip("*") for m in re.finditer(rf"^ {{{indent}}}(\**\w+)(?: \(.*?\))?:", block, flags=re.M)]


def callables():
    for name in MODULES:
        module = importlib.import_module(f"vsrkit.backbones.{name}")
        for obj_name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__ or obj_name.startswith("_"):
                continue
            if inspect.isclass(obj):
                yield f"{name}.{obj_name}", obj, True
                for meth_name, meth in vars(obj).items():
                    if inspect.isfunction(meth) and not meth_name.startswith("_"):
                        yield f"{name}.{obj_name}.{meth_name}", meth, False
            elif inspect.isfunction(obj):
                yield f"{name}.{obj_name}", obj, False


CASES = [c for c in callables() if documented_args(inspect.getdoc(c[1]) or "") is not None]


def test_there_are_documented_callables():
    assert len(CASES) >= 40


@pytest.mark.parametrize("qualname,obj,is_class", CASES, ids=[c[0] for c in CASES])
def test_args_section_matches_signature(qualname, obj, is_class):
    doc_args = documented_args(inspect.getdoc(obj))
    target = obj.__init__ if is_class and not hasattr(obj, "__dataclass_fields__") else obj
    if is_class and hasattr(obj, "__dataclass_fields__"):
        params = list(obj.__dataclass_fields__)
    else:
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    assert doc_args == params, qualname
