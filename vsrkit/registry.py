"""Name -> implementation registries, one per kind of component.

Registration stores a *dotted path* to the implementation, not the object, so that
``import vsrkit`` and ``vsrkit ls`` never import torch, diffusers or av. The object is
imported on first :meth:`Registry.get`.

Two ways to register::

    # by path (how the built-ins do it, see vsrkit/builtins.py)
    METHODS.register("bicubic", impl="vsrkit.methods.baselines.method:BicubicMethod",
                     config="vsrkit.methods.baselines.config:ResizeConfig")

    # by decorator (third-party plugins, tests)
    @METHODS.register("mymethod")
    class MyMethod: ...

Every entry may name a config dataclass (``config=``); the command line builds that
dataclass from the Hydra config group of the same kind.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Entry:
    """One registered component.

    Args:
        name: The registry name users type (``method=<name>``).
        impl: ``"module:attr"`` path of the implementation, or the object itself.
        config: ``"module:attr"`` path of the config dataclass, or the class, or None.
        module: Module that registered the entry (named in duplicate errors).
        meta: Free-form facts shown by ``vsrkit ls`` (e.g. a backbone family).
    """

    name: str
    impl: Any
    config: Any = None
    module: str = ""
    meta: dict = field(default_factory=dict)


def resolve(path_or_obj: Any) -> Any:
    """Import ``"package.module:attr"`` (or return a non-string as is)."""
    if not isinstance(path_or_obj, str):
        return path_or_obj
    module_name, _, attr = path_or_obj.partition(":")
    if not attr:
        raise ValueError(f"`{path_or_obj}` is not a 'module:attribute' path.")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry:
    """A small name -> :class:`Entry` map with good errors.

    Args:
        kind: What the registry holds, used in messages ("method", "backbone", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        impl: Any = None,
        *,
        config: Any = None,
        module: str | None = None,
        **meta: Any,
    ) -> Callable[[Any], Any] | Any:
        """Register ``impl`` under ``name``; without ``impl``, return a decorator.

        Raises:
            ValueError: ``name`` is already registered (the message names both modules).
        """

        def add(obj: Any) -> Any:
            origin = module or (obj.split(":")[0] if isinstance(obj, str) else getattr(obj, "__module__", "?"))
            if name in self._entries:
                raise ValueError(
                    f"{self.kind} `{name}` is registered twice: by `{self._entries[name].module}` "
                    f"and by `{origin}`. Rename one of them."
                )
            self._entries[name] = Entry(name=name, impl=obj, config=config, module=origin, meta=dict(meta))
            return obj

        if impl is None:
            return add
        return add(impl)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests that register throwaway entries)."""
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` for ``name``.

        Raises:
            KeyError: ``name`` is unknown; the message lists close matches and all names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        return f"Unknown {self.kind} `{name}`.{hint} Known: {', '.join(self.names()) or 'none'}."

    def get(self, name: str) -> Any:
        """The implementation registered as ``name``, imported on first use."""
        entry = self.entry(name)
        entry.impl = resolve(entry.impl)
        return entry.impl

    def get_config(self, name: str) -> Any:
        """The config dataclass registered with ``name`` (None if it has none)."""
        entry = self.entry(name)
        entry.config = resolve(entry.config) if entry.config is not None else None
        return entry.config

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


METHODS = Registry("method")
BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
DEGRADATIONS = Registry("degradation")
METRICS = Registry("metric")
KEYFRAME_SELECTORS = Registry("keyframe selector")
KEYFRAME_SOURCES = Registry("keyframe source")
VISUAL_ENCODERS = Registry("visual encoder")

ALL = {
    "methods": METHODS,
    "backbones": BACKBONES,
    "datasets": DATASETS,
    "degradations": DEGRADATIONS,
    "metrics": METRICS,
    "keyframe selectors": KEYFRAME_SELECTORS,
    "keyframe sources": KEYFRAME_SOURCES,
    "visual encoders": VISUAL_ENCODERS,
}
