"""MLflow tracking and the model registry: runs and lineage, the training callback, the promotion
gate, champion download, and a lean local server.

- :mod:`.runs`: one parent run per pipeline run, a child run per step (:func:`step_run`), lineage tags.
- :mod:`.callback`: ``MlflowCallback``, the training loop's params, per-epoch metrics and files
  (imported from there: it brings the training loop with it, which nothing else here needs).
- :mod:`.registry`: registered versions of ``textrec-line``; ``challenger`` / ``champion`` aliases.
- :mod:`.pyfunc`: the registered model as an MLflow pyfunc (line images in, text and confidence out;
  imported from there: it imports mlflow).
- :mod:`.lineage`: training and test data as dataset inputs, evaluation metrics on the LoggedModel.
- :mod:`.gate`: the promotion gate (:func:`promote`) and the register step (:func:`register_challenger`).
- :mod:`.server`: start, find and stop a local ``mlflow server`` on 127.0.0.1.

mlflow is imported inside the functions: importing this package costs nothing until something tracks.
"""

from textrec.tracking.gate import Decision, compare, promote, register_challenger
from textrec.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    PAGE_MODEL_NAME,
    LoggedVersion,
    download_champion,
    download_model,
    log_line_version,
    log_model_version,
    version_info,
)
from textrec.tracking.runs import (
    EXPERIMENT,
    EXPERIMENT_KIND,
    PARENT_STEP,
    TAG_DATASET,
    TAG_EVAL_SET,
    TAG_EXPERIMENT_KIND,
    TAG_GIT,
    TAG_PARENT,
    TAG_PIPELINE_RUN,
    TAG_REAL_VAL_CER,
    TAG_REAL_VAL_SET,
    TAG_STEP,
    TAG_TEST_CER,
    StepTracking,
    TrackingError,
    ensure_experiment,
    experiment_url,
    git_commit,
    log_to_parent,
    mlflow_client,
    parent_run,
    resolve_tracking_uri,
    set_lineage,
    step_run,
    step_seconds,
)
from textrec.tracking.server import (
    MlflowServer,
    running_local_server,
    server_healthy,
    start_local_server,
    stop_local_server,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "EXPERIMENT", "EXPERIMENT_KIND", "MODEL_NAME", "PAGE_MODEL_NAME", "PARENT_STEP",
    "TAG_DATASET", "TAG_EVAL_SET", "TAG_EXPERIMENT_KIND", "TAG_GIT", "TAG_PARENT", "TAG_PIPELINE_RUN", "TAG_REAL_VAL_CER", "TAG_REAL_VAL_SET",
    "TAG_STEP", "TAG_TEST_CER", "Decision",
    "LoggedVersion", "MlflowServer", "StepTracking", "TrackingError", "mlflow_client", "compare", "download_champion",
    "download_model", "ensure_experiment", "experiment_url", "git_commit", "log_line_version", "log_model_version", "log_to_parent",
    "parent_run", "promote", "register_challenger", "resolve_tracking_uri", "running_local_server",
    "server_healthy", "set_lineage", "start_local_server", "step_run", "step_seconds", "stop_local_server",
    "version_info",
]
