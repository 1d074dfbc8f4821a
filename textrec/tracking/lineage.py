"""Lineage the MLflow 3 way: which lines a model was trained and scored on, and its scores.

- The training run gets the line stores as an ``mlflow.data`` dataset input (context ``training``),
  its digest the stores' content hash (:func:`textrec.data.store.describe_stores`).
- The run that registers a model gets the test split as an input (context ``evaluation``) together
  with the model, and the evaluation metrics go to the LoggedModel (``model_id``), tied to that set.

MLflow keeps at most 36 characters of a digest: a digest is the first 36 hex digits of the hash
(144 bits; sets still never collide), and the whole hash rides along as the input tag
:data:`TAG_CONTENT_HASH`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textrec.metrics import numeric
from textrec.tracking.runs import mlflow_client

DIGEST_CHARS = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE
TAG_CONTENT_HASH = "textrec.content_hash"
TRAINING, EVALUATION = "training", "evaluation"  # MLflow's dataset contexts
TRAIN_DATASET, TEST_DATASET = "lines", "lines-test"


def lines_dataset(stores: Sequence[str | os.PathLike], content_hash: str, name: str = TRAIN_DATASET):
    """An ``mlflow.data`` dataset for line stores: ``content_hash`` as digest, their folder as source."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    if not content_hash:
        raise ValueError(f"dataset {name!r}: no content hash to identify it by")
    folders = {str(Path(p).parent) for p in stores}
    where = folders.pop() if len(folders) == 1 else os.path.commonpath([str(p) for p in stores])
    with warnings.catch_warnings():  # a local path matches two equivalent source kinds; both are "local"
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(where)
    # MetaDataset's profile is None by design (mlflow types it as abstract).
    return MetaDataset(source, name=name, digest=content_hash[:DIGEST_CHARS])  # type: ignore[abstract]


def _dataset_input(dataset: Any, context: str, content_hash: str):
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    # What mlflow.log_input sends, for a run that need not be the active one.
    return DatasetInput(_entity(dataset), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context),
                                      InputTag(TAG_CONTENT_HASH, content_hash)])


def log_training_data(run_id: str, stores: Sequence[str | os.PathLike], content_hash: str, *,
                      tracking_uri: str | None = None) -> None:
    """The stores as the training input of run ``run_id`` (the training run; it need not be active)."""
    dataset = lines_dataset(stores, content_hash, TRAIN_DATASET)
    mlflow_client(tracking_uri).log_inputs(run_id, datasets=[_dataset_input(dataset, TRAINING, content_hash)])


def log_model_evaluation(run_id: str, model_id: str, stores: Sequence[str | os.PathLike], eval_hash: str,
                         metrics: Mapping[str, Any], *, tracking_uri: str | None = None,
                         extra_metrics: Mapping[str, Any] | None = None) -> None:
    """The test split of ``stores`` (identified by ``eval_hash``) and model ``model_id`` as inputs of run
    ``run_id``; ``metrics`` (scored on that split) and ``extra_metrics`` (scored elsewhere, say on a
    labelled real set) on the LoggedModel, the first tied to the split's dataset."""
    from mlflow.entities import LoggedModelInput, Metric

    client = mlflow_client(tracking_uri)
    dataset = lines_dataset(stores, eval_hash, TEST_DATASET)
    client.log_inputs(run_id, datasets=[_dataset_input(dataset, EVALUATION, eval_hash)],
                      models=[LoggedModelInput(model_id)])
    entity = _entity(dataset)
    now = _now_ms()
    batch = [Metric(k, v, now, 0, model_id=model_id, dataset_name=entity.name, dataset_digest=entity.digest,
                    run_id=run_id) for k, v in numeric(metrics).items()]
    batch += [Metric(k, v, now, 0, model_id=model_id, run_id=run_id) for k, v in numeric(extra_metrics or {}).items()]
    client.log_batch(run_id, metrics=batch)


def _entity(dataset: Any):
    """An ``mlflow.data`` dataset as the tracking entity (name, digest, source) runs and metrics refer to."""
    from mlflow.entities import Dataset

    return Dataset(**dataset.to_dict())


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
