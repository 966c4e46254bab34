"""Per-clip metadata files: which files to use and the prompt of each.

Accepted formats (PS-SR uses a CSV with ``video,prompt``; pssr.md §5.1):

- ``.csv`` with a header row;
- ``.json``: a list of objects, or one object ``{path: prompt}``;
- ``.jsonl``: one object per line.

The path key is the first present of ``video``, ``image``, ``path``, ``file``, ``clip``; the prompt
key the first of ``prompt``, ``caption``, ``text`` (missing: empty prompt).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from vsrkit.errors import UserError

PATH_KEYS = ("video", "image", "path", "file", "clip")
PROMPT_KEYS = ("prompt", "caption", "text")


@dataclass(frozen=True)
class MetadataRow:
    """One entry: the path as written in the file and its prompt (None if the row has none)."""

    path: str
    prompt: str | None


def _rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read metadata file {path}: {err}") from None
    try:
        if suffix == ".csv":
            return list(csv.DictReader(text.splitlines()))
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if suffix == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                return [{"path": k, "prompt": v} for k, v in data.items()]
            if isinstance(data, list):
                return data
            raise UserError(f"metadata file {path} must hold a list of objects or a {{path: prompt}} object.")
    except (json.JSONDecodeError, csv.Error) as err:
        raise UserError(f"metadata file {path} is not valid {suffix[1:].upper()}: {err}") from None
    raise UserError(f"metadata file {path} must end in .csv, .json or .jsonl. Got `{suffix}`.")


def load_metadata(path: str | Path) -> list[MetadataRow]:
    """Read a metadata file.

    Raises:
        UserError: unreadable file, unknown format, or a row without a path key.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metadata file {path} does not exist (set `data.metadata=` to a CSV/JSON file).")
    rows = []
    for number, row in enumerate(_rows(path), start=1):
        if not isinstance(row, dict):
            raise UserError(f"metadata file {path}, entry {number}: expected an object. Got {row!r}.")
        key = next((k for k in PATH_KEYS if row.get(k)), None)
        if key is None:
            raise UserError(f"metadata file {path}, entry {number}: no path column; expected one of "
                            f"{list(PATH_KEYS)}. Got keys {sorted(row)}.")
        prompt_key = next((k for k in PROMPT_KEYS if k in row), None)
        prompt = row[prompt_key] if prompt_key is not None else None
        rows.append(MetadataRow(str(row[key]).strip(), None if prompt is None else str(prompt)))
    return rows


def resolve_rows(rows: list[MetadataRow], base: Path, metadata_path: str | Path) -> list[tuple[Path, str | None]]:
    """Absolute paths of ``rows`` (relative ones against ``base``), each checked to exist."""
    out = []
    for row in rows:
        p = Path(row.path).expanduser()
        p = p if p.is_absolute() else (base / p)
        if not p.exists():
            raise UserError(f"metadata file {metadata_path} lists {row.path}, which does not exist "
                            f"(looked for {p}).")
        out.append((p.resolve(), row.prompt))
    return out
