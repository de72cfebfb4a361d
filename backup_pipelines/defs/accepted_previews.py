"""The two non-stable Dagster APIs this code location uses on purpose, and why.

- `MultiToSingleDimensionPartitionMapping` (beta): a restore point `db1 | 2026-11-20` depends
  on db1's backups, not on every host's. The stable alternatives are wrong here:
  `AllPartitionMapping` would mark every host's restore points stale after any host's
  backup, and an identity mapping cannot cross host -> host x day.
- `partitions_def` on asset checks (preview): RPO and integrity are judged per host (and
  verification per host and day). Unpartitioned checks would show one colour for the
  whole fleet, hiding which host breached its RPO: the thing an operator needs to see.

Both warnings are filtered only while our definitions are built, by their exact message;
any other Beta/Preview/Deprecation warning still shows (tests load with them as errors).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import BetaWarning, PreviewWarning

ACCEPTED = (
    (BetaWarning, r"Class `MultiToSingleDimensionPartitionMapping` is currently in beta"),
    (PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"),
)


@contextmanager
def accepted_previews() -> Iterator[None]:
    with warnings.catch_warnings():
        for category, message in ACCEPTED:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
