"""vsrkit: diffusion video super-resolution methods behind one registry and one command line.

Importing this package is cheap: it imports no torch, diffusers or av. Components are
registered by dotted path in :mod:`vsrkit.builtins` and imported on first use.
"""

__version__ = "0.1.0"
