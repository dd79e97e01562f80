"""The publication's side of a study: where its numbers come from (``source:``) and the
numbers themselves (``published:``), each tied to the cells it compares with by ``where``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squeezelab.config import ConfigBase
from squeezelab.workflows.studies.errors import check


@dataclass
class SourceRef(ConfigBase):
    """Where a study's numbers come from: the paper, its arXiv id, the table or figure."""

    paper: str = ""
    arxiv: str | None = None
    where: str | None = None  # "Table 1", "Fig. 3(a)"
    url: str | None = None
    note: str | None = None


@dataclass
class PublishedValue(ConfigBase):
    """One published number: the cells it belongs to (``where``: axis -> variant name; every
    cell whose variants include these), its value in percent, and what it measures. Fields
    left unset take the ``published:`` block's defaults."""

    percent: float
    where: dict[str, str] = field(default_factory=dict)
    metric: str | None = None  # top1, top5: compared with our test_top1 / test_top5
    dataset: str | None = None
    source: str | None = None
    note: str | None = None
    model_size_mb: float | None = None  # the publication's model size, where it gives one
    #: how many times smaller than its uncompressed (fp32) model, where it gives that
    compression_ratio: float | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.where, dict), f"where must be a mapping of axis: variant name, "
              f"got {self.where!r}")
        for key in ("model_size_mb", "compression_ratio"):
            value = getattr(self, key)
            check(value is None or isinstance(value, (int, float))
                  and not isinstance(value, bool) and value > 0,
                  f"{key} must be a positive number or null, got {value!r}")
        check(isinstance(self.percent, (int, float)) and not isinstance(self.percent, bool),
              f"percent (the published value, in percent) must be a number, got "
              f"{self.percent!r}")


@dataclass
class Published(ConfigBase):
    """The publication's numbers: defaults (metric, dataset, source, note) and the values."""

    metric: str = "top1"
    dataset: str | None = None
    source: str | None = None
    note: str | None = None
    values: list[PublishedValue] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(isinstance(self.values, list), f"values must be a list, got {self.values!r}")
        self.values = [v if isinstance(v, PublishedValue)
                       else PublishedValue.from_dict(v, source=f"values[{i}]")
                       for i, v in enumerate(self.values)]

    def resolved(self, value: PublishedValue) -> dict[str, Any]:
        """``value`` with this block's defaults filled in, as a plain dict."""
        out = value.to_dict()
        for key in ("metric", "dataset", "source", "note"):
            if out[key] is None:
                out[key] = getattr(self, key)
        return out


__all__ = ["Published", "PublishedValue", "SourceRef"]
