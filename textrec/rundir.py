"""The layout of a training run's folder, written once::

    OUT/
      model.pt              the model artifact (textrec.artifact)
      metrics.json          final metrics
      config.yaml           the full training config the run used
      checkpoints/
        last.pt             where a resumed run continues
        best.pt             the weights with the best validation score

Training writes it, resume and checkpoint mirroring read it, the pipeline copies its outputs on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "model.pt"
METRICS = "metrics.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder; nothing is created until something writes there."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    # What a finished run hands on (to a model artifact folder, an s3:// prefix, MLflow).
    OUTPUTS = (MODEL, METRICS, CONFIG)
    # The checkpoint files, relative to the root (what a retried step mirrors).
    CHECKPOINT_FILES = (f"{CHECKPOINTS}/{LAST}", f"{CHECKPOINTS}/{BEST}")

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    def outputs(self) -> list[Path]:
        """The finished run's files that exist, in :attr:`OUTPUTS` order."""
        return [self.root / name for name in self.OUTPUTS if (self.root / name).is_file()]

    def read_metrics(self) -> dict[str, Any]:
        try:
            return json.loads(self.metrics.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.metrics}: the run has no metrics (did training finish?)") from None
