"""What a build did: the counters of every cluster read, and the accounting identity
``clusters read = kept + each drop reason + each skip reason`` (design.md section 4), printed
and stored in the dataset (``counts`` attribute, ``accounting``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from pionml.builder.table import DROP_REASONS, SPLIT_NAMES
from pionml.io.checks import EVENT_REASONS, SKIP_REASONS


@dataclass
class BuildSummary:
    """What a build did. ``dropped``: clusters removed by the selection, per cut;
    ``skipped``: clusters removed as bad data (``on_error='skip'``), per reason;
    ``skipped_entries``: events the ROOT reader skipped; ``skipped_files``: unreadable files."""

    out: str
    clusters_read: int = 0
    clusters_kept: int = 0
    events_read: int = 0
    dropped: dict = field(default_factory=lambda: {k: 0 for k in DROP_REASONS})
    skipped: dict = field(default_factory=lambda: {k: 0 for k in SKIP_REASONS})
    events_skipped: dict = field(default_factory=lambda: {k: 0 for k in EVENT_REASONS})
    skipped_files: list = field(default_factory=list)
    duplicate_inputs: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    per_split: dict = field(default_factory=lambda: {"train": 0, "val": 0, "test": 0})
    per_label: dict = field(default_factory=lambda: {"pi0": 0, "pipm": 0})
    #: sum imaged / sum E_EM (ATL-PHYS-PUB-2020-018: ~95%)
    image_energy_fraction: float = float("nan")
    image_energy_fraction_mean: float = float("nan")  # mean over clusters of imaged / E_EM
    image_energy_fraction_median: float = float("nan")
    pixel_collisions: int = 0
    cells_kept: int = 0
    #: cells of kept clusters in samplings other than pionml's barrel layers (not imaged, not in
    #: the point clouds), and the kept clusters that have such cells
    cells_outside_barrel: int = 0
    clusters_with_cells_outside_barrel: int = 0
    seconds: float = 0.0

    def counts(self) -> dict:
        """The per-reason counts stored in the file's ``counts`` attribute (no timing), with the
        accounting identity as text (``accounting``) and its check (``accounting_ok``)."""
        d = asdict(self)
        d.pop("out")
        d.pop("seconds")
        d["accounting"] = self.accounting()
        d["accounting_ok"] = self.balanced()
        return d

    def balanced(self) -> bool:
        """clusters read = kept + each drop reason + each skip reason."""
        return self.clusters_read == (self.clusters_kept + sum(self.dropped.values())
                                      + sum(self.skipped.values()))

    def accounting(self) -> str:
        """The accounting identity, written out: ``clusters read N = kept K + dropped ... +
        skipped ...`` (every reason, zeros included)."""
        drop = " + ".join(f"{k} {v}" for k, v in self.dropped.items())
        skip = " + ".join(f"{k} {v}" for k, v in self.skipped.items())
        ok = "" if self.balanced() else "  (DOES NOT ADD UP)"
        return (f"clusters read {self.clusters_read} = kept {self.clusters_kept}"
                f" + dropped [{drop}] + skipped [{skip}]{ok}")

    def format(self) -> str:
        lines = [
            f"dataset: {self.out}",
            f"events read: {self.events_read}, clusters read: {self.clusters_read}, "
            f"kept: {self.clusters_kept} (train {self.per_split['train']}, val "
            f"{self.per_split['val']}, test {self.per_split['test']}; pi0 {self.per_label['pi0']}, "
            f"pi+- {self.per_label['pipm']})",
            "dropped by the selection: " + ", ".join(f"{k} {v}" for k, v in self.dropped.items()),
            "skipped as bad data: " + (", ".join(f"{k} {v}" for k, v in self.skipped.items() if v)
                                       or "none"),
        ]
        if any(self.events_skipped.values()):
            lines.append("events whose clusters were all skipped (event-level bad data): "
                         + ", ".join(f"{k} {v}" for k, v in self.events_skipped.items() if v))
        lines.append("accounting: " + self.accounting())
        for f in self.skipped_files:
            lines.append(f"file skipped: {f['file']}: {f['reason']}")
        for w in self.warnings:
            lines.append(f"WARNING: {w}")
        for d in self.duplicate_inputs:
            lines.append(f"input not built twice: {d['file']} has the same content (sha256) as "
                         f"{d['same_as']}")
        if self.clusters_kept and np.isnan(self.image_energy_fraction):
            lines.append("images: none written (cluster table only)")
        else:
            lines.append(f"fraction of the cluster energy inside the images: "
                         f"{self.image_energy_fraction:.4f} energy-weighted (sum over clusters), "
                         f"per cluster mean {self.image_energy_fraction_mean:.4f}, median "
                         f"{self.image_energy_fraction_median:.4f}")
            lines.append(f"pixels that received more than one cell: {self.pixel_collisions}")
        if self.cells_outside_barrel:
            lines.append(f"cells outside pionml's barrel layers (not imaged, not in the point "
                         f"clouds): {self.cells_outside_barrel} in "
                         f"{self.clusters_with_cells_outside_barrel} kept clusters")
        rate = self.clusters_read / self.seconds if self.seconds > 0 else float("nan")
        lines.append(f"time: {self.seconds:.1f} s ({rate:.0f} clusters/s read)")
        return "\n".join(lines)

    def add_dropped(self, dropped: dict) -> None:
        for reason, n in dropped.items():
            self.dropped[reason] += n

    def add_kept(self, split: np.ndarray, label: np.ndarray, cells_written: int) -> None:
        """Count the kept rows of one block: per split, per label, and their stored cells."""
        n = len(split)
        self.clusters_kept += n
        self.cells_kept += int(cells_written)
        for code, name in enumerate(SPLIT_NAMES):
            self.per_split[name] += int((split == code).sum())
        self.per_label["pi0"] += int(label.sum())
        self.per_label["pipm"] += int(n - label.sum())
