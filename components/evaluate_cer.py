from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate_cer(model: Input[Model], lines: Input[Dataset], real_val: str, pipeline_run_id: str, mlflow_uri: str,
                 experiment: str, metrics: Output[Metrics], report: Output[HTML], task: str = "line",
                 reviewed_store: str = ""
                 ) -> NamedTuple("Evaluation", [("cer", float), ("eval_set_hash", str), ("real_val_cer", float),
                                                ("real_val_hash", str)]):
    """Character and word error rates on the fixed test split of every line store, and an HTML report
    with the worst lines beside their images; eval_set_hash identifies the exact lines scored. With
    real_val (a labelled real set: TSV, IAM lines folder or s3:// URI) that set is scored too:
    real_val_cer and real_val_hash (-1 and empty without one). task 'page' scores a page model: page CER
    and WER on the test split of the dataset's page store (pages.h5), the report drawing each page's
    found lines, and real_val a page TSV (image<TAB>lines joined by a literal \\n). reviewed_store (lines
    reviewed in `textrec review`): its validation lines are the real set when real_val is empty, so the
    gate compares champion and challenger on the user's own handwriting."""
    import shutil
    import tempfile
    from collections import namedtuple

    from textrec.data.sources import task_stores
    from textrec.evaluate import evaluate_split
    from textrec.evaluate_pages import evaluate_page_split
    from textrec.rundir import RunDir
    from textrec.tracking import StepTracking

    stores = task_stores(lines.path, task)
    step = StepTracking(pipeline_run_id, mlflow_uri, experiment)
    if reviewed_store and not real_val and task == "line":
        from textrec.review.store import reviewed_inputs

        real_val = reviewed_inputs(reviewed_store).real_val
    if task == "page":
        result = evaluate_page_split(RunDir(model.path).model, stores[0], tempfile.mkdtemp(), step=step,
                                     real_val=real_val)
    else:
        result = evaluate_split(RunDir(model.path).model, stores, tempfile.mkdtemp(), step=step, real_val=real_val)
    shutil.copyfile(result["report"], report.path)
    for name in ("cer", "wer", "n", "real_val_cer", "real_val_wer", "real_val_n"):
        if name in result:
            metrics.log_metric(name, float(result[name]))
    if "real_val_hash" in result:
        report.metadata["real_val_hash"] = result["real_val_hash"]
    evaluation = namedtuple("Evaluation", ["cer", "eval_set_hash", "real_val_cer", "real_val_hash"])
    return evaluation(result["cer"], result["eval_set_hash"], float(result.get("real_val_cer", -1.0)),
                      result.get("real_val_hash", ""))
