"""The error a malformed data row raises, in a module of its own so that every reader of data
files (data, heldout, own_data) can raise it without importing the others."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data row is malformed; the message names the file, the line and the field."""

    def __init__(self, path: Path | str, line: int, field: str, problem: str):
        self.path, self.line, self.field = Path(path), line, field
        super().__init__(f"{path}, line {line}, field '{field}': {problem}")
