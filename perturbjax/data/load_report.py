"""What a loader kept and what it dropped, and why: every loader returns one of these."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter


@dataclasses.dataclass
class LoadReport:
    """Counts of kept and dropped records per reason, with a few examples of each.

    Attributes:
      source: the file (or files) read.
      kept: name -> count of what made it in (e.g. rows, nodes per type, matched drugs).
      dropped: reason -> number of records dropped for that reason.
      examples: reason -> up to `max_examples` short descriptions of dropped records.
      notes: anything else a user should read (coverage, mapping statistics).
    """

    source: str
    kept: dict = dataclasses.field(default_factory=dict)
    dropped: Counter = dataclasses.field(default_factory=Counter)
    examples: dict = dataclasses.field(default_factory=dict)
    notes: dict = dataclasses.field(default_factory=dict)
    max_examples: int = 5

    def drop(self, reason: str, count: int, examples=()) -> None:
        """Records `count` dropped records; zero counts are not recorded."""
        if count <= 0:
            return
        self.dropped[reason] += int(count)
        kept = self.examples.setdefault(reason, [])
        for e in examples:
            if len(kept) >= self.max_examples:
                break
            kept.append(str(e))

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: "LoadReport") -> "LoadReport":
        """This report with `other`'s counts added under `other.source`."""
        out = LoadReport(self.source, dict(self.kept), Counter(self.dropped),
                         {k: list(v) for k, v in self.examples.items()}, dict(self.notes))
        for k, v in other.kept.items():
            out.kept[f"{other.source}:{k}"] = v
        for reason, n in other.dropped.items():
            out.drop(f"{other.source}: {reason}", n, other.examples.get(reason, ()))
        for k, v in other.notes.items():
            out.notes[f"{other.source}:{k}"] = v
        return out

    def to_json(self) -> dict:
        return {"source": self.source, "kept": self.kept, "dropped": dict(self.dropped),
                "examples": self.examples, "notes": self.notes}

    def __str__(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)
