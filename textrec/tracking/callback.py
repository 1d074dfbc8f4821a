"""The training loop's MLflow callback: config as params, per-epoch metrics, the run's final files.

Only rank 0 talks to MLflow (callbacks run only there).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from textrec.metrics import numeric
from textrec.rundir import CONFIG, METRICS
from textrec.tracking.runs import TAG_REAL_VAL_SET, mlflow_client, resolve_tracking_uri
from textrec.training.callbacks import Callback


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loop": {"epochs": 3}}`` -> ``{"loop.epochs": 3}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class MlflowCallback(Callback):
    """The training run's config (params), per-epoch metrics (every number in the history: ``val_cer``,
    ``real_val_cer``, ...) and final files, logged to one MLflow run.

    Failures to reach MLflow are warned about, never raised: a tracking outage must not end a
    long training run.
    """

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        self.run_id = run_id
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._warned = False

    def _safely(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (any MLflow/HTTP error)
            if not self._warned:
                warnings.warn(f"MLflow: could not log {what} to run {self.run_id} ({e}); training goes on",
                              stacklevel=3)
                self._warned = True

    def on_train_start(self, trainer) -> None:
        from mlflow.entities import Param

        from textrec.config import to_dict

        def log() -> None:
            params = flatten(to_dict(trainer.config))
            params["world_size"] = getattr(trainer, "world_size", 1)
            existing = mlflow_client(self.tracking_uri).get_run(self.run_id).data.params
            new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
            for i in range(0, len(new), 100):  # log_batch takes at most 100 params at once
                mlflow_client(self.tracking_uri).log_batch(self.run_id, params=new[i:i + 100])
        self._safely("params", log)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        def log() -> None:
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, epoch + 1) for k, v in numeric(metrics).items()]
            mlflow_client(self.tracking_uri).log_batch(self.run_id, metrics=batch)
        self._safely("epoch metrics", log)

    def on_train_end(self, trainer, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        def log() -> None:
            client = mlflow_client(self.tracking_uri)
            now = int(time.time() * 1000)
            client.log_batch(self.run_id, metrics=[Metric(f"final_{k}", v, now, 0)
                                                   for k, v in numeric(metrics).items()])
            if metrics.get("real_val_hash"):  # which real lines real_val_cer was measured on
                client.set_tag(self.run_id, TAG_REAL_VAL_SET, metrics["real_val_hash"])
            out = Path(trainer.out_dir)
            for name in (METRICS, CONFIG):
                if (out / name).is_file():
                    client.log_artifact(self.run_id, str(out / name))
        self._safely("final metrics", log)
