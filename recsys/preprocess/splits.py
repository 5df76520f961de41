"""Which split each row belongs to, as the reference pipelines cut them.

Kaggle: the rows of all sources, in order, are cut into 7 equal consecutive "days" (the first
`total % 7` days get one row more, as DLRM's reference does); days 1-6 are train, and day 7 is
halved: first half test, second half validation. 1TB: every file but the last (day_0..day_22) is
train; the last (day_23) is halved: first half validation, second half test. A half of n rows is
ceil(n / 2) rows first (numpy's array_split). The unlabelled layout (test.txt) is all `test`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True)
class SplitPlan:
    """Row -> split code from (source index, 1-based line number)."""

    layout: str  # kaggle | 1tb | unlabelled
    source_offsets: tuple[int, ...]  # kaggle: lines before each source
    bounds: tuple[int, int]  # kaggle: global rows [0, a) train, [a, b) test, rest valid;
    # 1tb: rows [0, a) of the last source are valid, the rest test (b unused)
    num_sources: int

    def assign(self, source: int, lines: np.ndarray) -> np.ndarray:
        """Split codes (int8) of rows `lines` (1-based) of source `source`."""
        if self.layout == "unlabelled":
            return np.full(len(lines), TEST, dtype=np.int8)
        if self.layout == "1tb":
            if source < self.num_sources - 1:
                return np.full(len(lines), TRAIN, dtype=np.int8)
            return np.where(lines - 1 < self.bounds[0], VALID, TEST).astype(np.int8)
        g = self.source_offsets[source] + lines - 1
        a, b = self.bounds
        return np.where(g < a, TRAIN, np.where(g < b, TEST, VALID)).astype(np.int8)

    def has_train(self, source: int, first_line: int) -> bool:
        """Whether a chunk starting here can hold training rows (the counting pass skips others)."""
        if self.layout == "1tb":
            return source < self.num_sources - 1
        if self.layout == "kaggle":
            return self.source_offsets[source] + first_line - 1 < self.bounds[0]
        return False


def kaggle_plan(lines_per_source: list[int]) -> SplitPlan:
    total = sum(lines_per_source)
    per_day, extra = divmod(total, 7)
    days = [per_day + (1 if d < extra else 0) for d in range(7)]
    train = sum(days[:6])
    offsets = tuple(int(x) for x in np.cumsum([0, *lines_per_source[:-1]]))
    return SplitPlan("kaggle", offsets, (train, train + (days[6] + 1) // 2), len(lines_per_source))


def terabyte_plan(num_sources: int, last_source_lines: int) -> SplitPlan:
    return SplitPlan("1tb", (), ((last_source_lines + 1) // 2, 0), num_sources)


def unlabelled_plan(num_sources: int) -> SplitPlan:
    return SplitPlan("unlabelled", (), (0, 0), num_sources)
