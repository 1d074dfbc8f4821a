"""One trial of a Katib Experiment: train the config it was given and print the metric for Katib.

    TEXTREC_TRIAL_CONFIG="$(cat config.yaml)" python3 -m textrec.sweep.trial --metric val_cer optim.lr=0.001

The training config arrives whole in ``TEXTREC_TRIAL_CONFIG`` (the sweep's base config with its fixed
overrides and budget, see :func:`textrec.sweep.katib.experiment`); the trial's values arrive as dotted
overrides. Katib's StdOut collector reads ``name=value`` lines: after every epoch this prints
``val_cer=0.123456`` (fixed-point: the collector's default pattern has no exponents), and once more for
the final model, so Katib's ``min`` strategy and the local sweep score a trial alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from textrec.training.callbacks import Callback

CONFIG_ENV = "TEXTREC_TRIAL_CONFIG"


def metric_line(name: str, value: float) -> str:
    """What Katib's StdOut collector parses (its default pattern ``([\\w|-]+)\\s*=\\s*((-?\\d+)(\\.\\d+)?)``).

    >>> metric_line("val_cer", 1.5e-05)
    'val_cer=0.000015'
    """
    return f"{name}={value:.6f}"


class StdoutMetrics(Callback):
    """Prints ``metric=value`` after every epoch."""

    def __init__(self, metric: str, stream: TextIO | None = None) -> None:
        self.metric, self.stream = metric, stream

    def emit(self, value: float) -> None:
        print(metric_line(self.metric, value), file=self.stream or sys.stdout, flush=True)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get(self.metric)
        if isinstance(value, int | float):
            self.emit(float(value))


def main(argv: Sequence[str] | None = None) -> int:
    import yaml

    from textrec.sweep.study import trial_value
    from textrec.training import load_config, train

    p = argparse.ArgumentParser(prog="python -m textrec.sweep.trial", description=__doc__.split("\n")[0])
    p.add_argument("--metric", default="val_cer", help="the metric Katib optimises")
    p.add_argument("--out", default="/tmp/textrec-trial", help="the trial's run folder")
    p.add_argument("overrides", nargs="*", help="the trial's values as KEY=VALUE")
    a = p.parse_args(argv)
    text = os.environ.get(CONFIG_ENV, "")
    if not text.strip():
        p.error(f"{CONFIG_ENV} is empty: it must hold the trial's training config as YAML")
    cfg = load_config(yaml.safe_load(text) or {}, a.overrides)
    printer = StdoutMetrics(a.metric)
    seen: list[float] = []

    class Keep(Callback):
        def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
            if isinstance(metrics.get(a.metric), int | float):
                seen.append(float(metrics[a.metric]))

    metrics = train(cfg, a.out, callbacks=[printer, Keep()], resume="auto")
    printer.emit(trial_value(metrics, seen, a.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
