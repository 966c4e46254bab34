"""One module per ``vsrkit`` subcommand; :mod:`vsrkit.cli` only dispatches."""
