"""The settings a dataset was written with, kept beside its data, and a later write with others refused.

A writer that adds to a directory across runs (the collector, the demonstrators' histories, the per-task
relabelling) records what it was asked for in one JSON file there the first time, and every later run
checks its own settings against that file before it writes anything: data written under two settings
would mix silently. ``DatasetSettings`` is that record for every writer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets.atomic import atomic_path

__all__ = ["DatasetSettings"]


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    """What a dataset directory is (or is to be) written with.

    Attributes:
      directory: the dataset's directory; the record is ``directory / file_name``.
      file_name: the record's name (``collect.json``, ``demonstrators.json``, ``per_task.json``).
      settings: name -> value, JSON-serialisable; compared as JSON gives them back (a tuple equals a list).
      defaults: name -> the value that data recorded before the setting existed was written with (a record
        without the name is read as having this value).
      advice: what to do instead, appended to a refusal (e.g. "use another --out").
    """

    directory: Path
    file_name: str
    settings: Mapping[str, Any]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    advice: str = ""

    @property
    def path(self) -> Path:
        return Path(self.directory) / self.file_name

    def _recorded(self) -> dict | None:
        """The settings on disk; None where none are recorded yet."""
        if not self.path.exists():
            return None
        try:
            stored = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.path}: not a settings record ({error}); it says how the data beside it was "
                             "written, so it is not replaced: move the directory aside to start anew") from None
        if not isinstance(stored, dict):
            raise ValueError(f"{self.path}: not a settings record (a JSON object was expected)")
        return stored

    def check(self) -> bool:
        """Refuses settings that differ from the recorded ones, naming every differing field and the directory.

        A recorded setting that ``settings`` does not name is not compared (a writer leaves out what it did
        not use, so that data written before a setting existed still matches).

        Returns:
          Whether settings are recorded (and match); False where the directory holds no record yet.

        Raises:
          ValueError: a setting differs, or the record is not readable.
        """
        stored = self._recorded()
        if stored is None:
            return False
        wanted = _as_json(self.settings)
        differ = [f"{name}={value!r} here, {stored.get(name, self.defaults.get(name))!r} there"
                  for name, value in wanted.items() if stored.get(name, self.defaults.get(name)) != value]
        if differ:
            advice = f"; {self.advice}" if self.advice else ""
            raise ValueError(f"the data in {self.directory} was written with other settings ({self.file_name}): "
                             + "; ".join(differ) + advice)
        return True

    def record(self) -> None:
        """Writes the record where there is none (the directory made first), whole or not at all."""
        if self.path.exists():
            return
        text = json.dumps(_as_json(self.settings), indent=1) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as temporary:
            temporary.write_text(text)

    def claim(self) -> None:
        """``check``, then ``record``: what a writer does before its first file."""
        self.check()
        self.record()


def _as_json(settings: Mapping[str, Any]) -> dict:
    """``settings`` as JSON reads them back (tuples as lists), so that a record compares with the request."""
    try:
        return json.loads(json.dumps(dict(settings)))
    except TypeError as error:
        raise ValueError(f"settings: not JSON-serialisable ({error})") from None
