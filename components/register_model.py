from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register_model(model: Input[Model], lines: Input[Dataset], test_cer: float, eval_set_hash: str,
                   real_val_cer: float, real_val_hash: str, model_name: str, promotion_margin: float, pipeline_run_id: str, mlflow_uri: str,
                   experiment: str, metrics: Output[Metrics], decision: Output[Artifact], task: str = "line"
                   ) -> NamedTuple("Registration", [("model_uri", str), ("version", str), ("promoted", bool)]):
    """Register the model in MLflow as a new version with alias 'challenger'. Alias 'champion' moves to
    it only if its test CER beats the champion's on the same evaluation set by more than
    promotion_margin; otherwise the champion stays. When the champion was also scored on the labelled real
    set of real_val_hash (empty: none), real_val_cer decides instead. decision (JSON) says which, why, and
    on what metric. The version's source run is the training run named in model's metadata
    (mlflow_run_id), where the model is logged at its best epoch. model_name empty: textrec-line, or
    for task 'page' textrec-page (a page model: its pyfunc reads pages, a re-scored champion is scored
    on the dataset's page store)."""
    from collections import namedtuple

    from textrec.data.sources import task_stores
    from textrec.rundir import RunDir
    from textrec.tracking import MODEL_NAME, PAGE_MODEL_NAME, StepTracking, register_challenger

    stores = task_stores(lines.path, task)
    model_name = model_name or (PAGE_MODEL_NAME if task == "page" else MODEL_NAME)
    d = register_challenger(RunDir(model.path).model, stores, test_cer=test_cer, task=task,
                            eval_hash=eval_set_hash, model_name=model_name, margin=promotion_margin,
                            step=StepTracking(pipeline_run_id, mlflow_uri, experiment),
                            decision_path=decision.path, real_val_cer=real_val_cer, real_val_hash=real_val_hash,
                            train_run_id=str(model.metadata.get("mlflow_run_id", "")))
    decision.metadata.update(promoted=d.promoted, reason=d.reason, version=d.version, metric=d.metric)
    metrics.log_metric("promoted", float(d.promoted))
    metrics.log_metric("challenger_cer", d.challenger_cer)
    registration = namedtuple("Registration", ["model_uri", "version", "promoted"])
    return registration(f"models:/{model_name}/{d.version}", d.version, d.promoted)
