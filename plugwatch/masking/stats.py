"""Counts from masking: what was found, what the verifier caught, what failed closed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MaskStats:
    """Per-detector hits for one value or, merged, for many.

    ``violations`` counts post-mask verifier hits (each replaced a whole value); ``dropped`` counts
    values dropped because the masker itself failed (fail closed). Callers increment the
    ``debug_masking_violation_total`` counter from ``violations`` and flag the event on ``flagged``.
    """

    counts: dict[str, int] = field(default_factory=dict)
    violations: int = 0
    dropped: int = 0
    flagged_values: int = 0

    @property
    def flagged(self) -> bool:
        return self.violations > 0 or self.dropped > 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def merge(self, other: MaskStats) -> MaskStats:
        for name, n in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + n
        self.violations += other.violations
        self.dropped += other.dropped
        self.flagged_values += other.flagged_values
        return self

    def __iadd__(self, other: MaskStats) -> MaskStats:
        return self.merge(other)

    def as_dict(self) -> dict[str, object]:
        return {"counts": dict(sorted(self.counts.items())), "violations": self.violations,
                "dropped": self.dropped, "flagged_values": self.flagged_values}
