"""The textrec pipeline: data -> synthetic + real lines -> training -> evaluation -> registry.

    python -m pipelines.textrec_pipeline            # writes pipelines/textrec_pipeline.yaml

::

    ingest_data ──> synthesize_lines ──> train_model ──> evaluate_cer ──> register_model ──> deploy_model
                                  plan_training ──┘

Data steps are cached (the same source and seed give the same stores); training, evaluation and
registration always run, since each run must log and register its own model. Training retries
resume from the run's last checkpoint. GPU placement is set on the train step: accelerator type and
count, a node selector and a toleration for tainted GPU nodes; ``plan_training`` drops the GPU
request when the step trains on the CPU or only launches a multi-node job.

Every step asks for CPU (request and limit) and memory (request = limit) through pipeline parameters,
``<kind>_cpu``, ``<kind>_cpu_limit`` and ``<kind>_memory`` for four kinds of step (:data:`RESOURCES`),
so a run sizes its pods without a recompile (KFP 2.17 takes pipeline parameters in ``set_cpu_request``
and the other resource setters).

What is submitted and compiled, ``textrec_pipeline_with_clean_up``, runs the steps (``textrec_pipeline``)
in a ``dsl.ExitHandler`` whose exit task, ``clean_up_run``, deletes an orphaned TrainJob/PyTorchJob and
marks the MLflow parent run FAILED when the run does not succeed. KFP takes no pipeline outputs from
inside an ExitHandler, so the steps stay a pipeline of their own with the run's outputs: that is what
``make local`` runs (kfp.local runs the one with the exit handler as well, without outputs).
"""

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent

from components import (
    COMPONENT_IMAGE,
    clean_up_run,
    deploy_model,
    evaluate_cer,
    ingest_data,
    plan_training,
    register_model,
    synthesize_lines,
    train_model,
)
from textrec.tracking import EXPERIMENT, MODEL_NAME

PIPELINE_NAME = "textrec"
DESCRIPTION = "Train, evaluate and register a handwritten line recognizer."
YAML_PATH = Path(__file__).with_name("textrec_pipeline.yaml")
ACCELERATOR = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # the label NVIDIA's GPU feature discovery sets
S3_SECRET = "textrec-s3"  # optional Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3 access
TRAIN_RETRIES = 2


@dataclass(frozen=True)
class Resources:
    """What one kind of step asks for. Memory is requested as much as it is limited to: a pod that uses
    more than it requested is the first evicted when its node runs short, which would cost a run its step."""

    cpu: str  # request
    cpu_limit: str
    memory: str  # request and limit


# The defaults of the <kind>_cpu, <kind>_cpu_limit and <kind>_memory pipeline parameters.
RESOURCES = {
    "data": Resources("1", "2", "4Gi"),  # ingest_data, synthesize_lines (renders and writes the stores)
    "train": Resources("4", "8", "16Gi"),  # train_model's own pod; a multi-node job sizes its pods itself
    "eval": Resources("1", "2", "4Gi"),  # evaluate_cer, register_model (which may re-score the champion)
    "control": Resources("250m", "1", "2Gi"),  # plan_training, deploy_model, clean_up_run
}


class PipelineOutputs(NamedTuple):
    """What a run produced: the registered version, whether it became the champion, and whether (and
    why not) serving moved to it."""

    model_uri: str
    version: str
    promoted: bool
    deployed: bool
    serving: str


def _sized(task: dsl.PipelineTask, cpu: str, cpu_limit: str, memory: str) -> dsl.PipelineTask:
    """CPU request and limit and memory (request = limit) on one step, from pipeline parameters."""
    return task.set_cpu_request(cpu).set_cpu_limit(cpu_limit).set_memory_request(memory).set_memory_limit(memory)


def _s3_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """S3 credentials from the optional Secret, for steps that read or write s3:// URIs."""
    return kubernetes.use_secret_as_env(
        task, secret_name=S3_SECRET, optional=True,
        secret_key_to_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                           "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})


@dsl.pipeline(name=f"{PIPELINE_NAME}-steps", description=DESCRIPTION)
def textrec_pipeline(
    data_source: str = "none",
    task: str = "line",
    synth_lines: int = 20000,
    synth_pages: int = 0,
    emnist_lines: int = 0,
    seed: int = 0,
    train_config: str = "",
    config_overrides: list = [],  # noqa: B006 (KFP reads defaults from the signature)
    epochs: int = 0,
    gpus_per_node: int = 1,
    nodes: int = 1,
    gpu_node_selector: dict = GPU_NODE_SELECTOR,  # noqa: B006
    checkpoint_root: str = "",
    real_val: str = "",
    reviewed_store: str = "",
    reviewed_weight: float = 0.0,
    model_name: str = "",
    promotion_margin: float = 0.0,
    mlflow_uri: str = "http://mlflow:5000",
    experiment: str = EXPERIMENT,
    serving_model_store: str = f"s3://textrec/models/{MODEL_NAME}",
    serving_deployment: str = "textrec-serving",
    serving_namespace: str = "",
    serving_target: str = "cluster",
    data_cpu: str = RESOURCES["data"].cpu,
    data_cpu_limit: str = RESOURCES["data"].cpu_limit,
    data_memory: str = RESOURCES["data"].memory,
    train_cpu: str = RESOURCES["train"].cpu,
    train_cpu_limit: str = RESOURCES["train"].cpu_limit,
    train_memory: str = RESOURCES["train"].memory,
    eval_cpu: str = RESOURCES["eval"].cpu,
    eval_cpu_limit: str = RESOURCES["eval"].cpu_limit,
    eval_memory: str = RESOURCES["eval"].memory,
    control_cpu: str = RESOURCES["control"].cpu,
    control_cpu_limit: str = RESOURCES["control"].cpu_limit,
    control_memory: str = RESOURCES["control"].memory,
) -> PipelineOutputs:
    """Parameters: data_source 'none' | 'emnist:<uri>' | 'iam:<uri>'; task 'line' (a line model, scored
    by line CER) or 'page' (a page model: scored by page CER on the synthetic pages' test split,
    registered as textrec-page, served at the page endpoint; needs synth_pages > 0); synth_lines
    synthetic lines to render; synth_pages synthetic pages to render (0: none); model_name the
    registered model (empty: textrec-line, or textrec-page for task 'page'); train_config a training config as YAML text (configs/*.yaml; empty: defaults) with config_overrides
    ('loop.epochs=3', ...) and epochs (0 keeps the config's); gpus_per_node and nodes (> 1 runs a
    TrainJob/PyTorchJob); checkpoint_root an s3:// prefix or mounted folder for resumable checkpoints;
    real_val labelled real lines (a TSV of image<TAB>text rows, an IAM lines folder, or an s3:// URI of
    either; for task 'page' a page TSV; empty: none) that training picks its best checkpoint by and that evaluation and the promotion
    gate score beside the synthetic test CER; promotion_margin how much lower the test CER (real_val CER
    when the champion was scored on the same real set) must be to replace the champion; reviewed_store
    lines reviewed in `textrec review` (a folder or s3:// prefix): its validation lines are the real set
    when real_val is empty, and with reviewed_weight > 0 its training lines join training, each counting
    that many times per epoch; serving_* where a new
    champion goes: the model store prefix its .mar is uploaded to and the Deployment that is rolled
    (serving_namespace empty = the pipeline's own namespace); serving_target 'cluster', 'local' (a
    TorchServe on the same machine) or 'none' (register only); data_*, train_*, eval_* and control_* the
    CPU request, CPU limit and memory (request = limit) of the data steps, the train step, evaluation and
    registration, and the small steps (plan, deploy, clean-up), in Kubernetes quantities ('500m', '4Gi')."""
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    data, control = (data_cpu, data_cpu_limit, data_memory), (control_cpu, control_cpu_limit, control_memory)
    evaluating = (eval_cpu, eval_cpu_limit, eval_memory)

    ingest = _s3_credentials(_sized(ingest_data(data_source=data_source), *data))
    ingest.set_caching_options(True)
    lines = _sized(synthesize_lines(n_lines=synth_lines, seed=seed, emnist_lines=emnist_lines,
                                    source=ingest.outputs["dataset"], train_config=train_config,
                                    config_overrides=config_overrides, n_pages=synth_pages), *data)
    lines.set_caching_options(True)
    plan = _sized(plan_training(gpus_per_node=gpus_per_node, nodes=nodes, gpu_node_selector=gpu_node_selector),
                  *control)
    plan.set_caching_options(True)

    train = train_model(lines=lines.outputs["lines"], train_config=train_config,
                        config_overrides=config_overrides, epochs=epochs, gpus_per_node=gpus_per_node,
                        nodes=nodes, gpu_node_selector=gpu_node_selector, checkpoint_root=checkpoint_root,
                        real_val=real_val, pipeline_run_id=run_id, mlflow_uri=mlflow_uri, experiment=experiment,
                        reviewed_store=reviewed_store, reviewed_weight=reviewed_weight)
    _sized(train, train_cpu, train_cpu_limit, train_memory)
    train.set_caching_options(False).set_retry(TRAIN_RETRIES, backoff_duration="30s")
    train.set_accelerator_type(ACCELERATOR).set_accelerator_limit(plan.outputs["pod_gpus"])
    kubernetes.add_node_selector_json(train, plan.outputs["node_selector"])
    kubernetes.add_toleration(train, key=ACCELERATOR, operator="Exists", effect="NoSchedule")
    train.set_env_variable("TEXTREC_IMAGE", COMPONENT_IMAGE)  # the image of a multi-node job's pods
    train.set_env_variable("TEXTREC_S3_SECRET", S3_SECRET)
    _s3_credentials(train)

    evaluation = _sized(evaluate_cer(model=train.outputs["model"], lines=lines.outputs["lines"],
                                     real_val=real_val, pipeline_run_id=run_id, mlflow_uri=mlflow_uri,
                                     experiment=experiment, task=task, reviewed_store=reviewed_store),
                    *evaluating)
    evaluation.set_caching_options(False)
    _s3_credentials(evaluation)  # real_val may be on S3

    register = register_model(model=train.outputs["model"], lines=lines.outputs["lines"],
                              test_cer=evaluation.outputs["cer"],
                              eval_set_hash=evaluation.outputs["eval_set_hash"],
                              real_val_cer=evaluation.outputs["real_val_cer"],
                              real_val_hash=evaluation.outputs["real_val_hash"], model_name=model_name,
                              promotion_margin=promotion_margin, pipeline_run_id=run_id,
                              mlflow_uri=mlflow_uri, experiment=experiment, task=task)
    _sized(register, *evaluating).set_caching_options(False)
    _s3_credentials(register)

    # Always runs, and serves only a new champion: the step decides from the gate's outputs instead of
    # sitting in dsl.If branches, which kfp.local could not evaluate (it skipped them without a word).
    deploy = deploy_model(model_uri=register.outputs["model_uri"], promoted=register.outputs["promoted"],
                          mlflow_uri=mlflow_uri, model_store_uri=serving_model_store,
                          deployment=serving_deployment, namespace=serving_namespace, target=serving_target,
                          task=task)
    _sized(deploy, *control).set_caching_options(False)
    _s3_credentials(deploy)

    return PipelineOutputs(register.outputs["model_uri"], register.outputs["version"],
                           register.outputs["promoted"], deploy.outputs["changed"], deploy.outputs["reason"])


def _with_clean_up(steps: GraphComponent) -> Callable[..., None]:
    """A pipeline function with the parameters of ``steps`` that runs them in a ``dsl.ExitHandler`` whose
    exit task is ``clean_up_run``. The steps stay a pipeline of their own because KFP takes no pipeline
    outputs from inside an ExitHandler, and kfp.local runs them for their outputs."""
    signature = inspect.signature(steps.pipeline_func)

    def pipeline(*args: Any) -> None:  # KFP calls it with one channel per parameter, in order
        p = dict(zip(signature.parameters, args, strict=True))
        clean_up = clean_up_run(nodes=p["nodes"], pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                mlflow_uri=p["mlflow_uri"], experiment=p["experiment"])
        _sized(clean_up, p["control_cpu"], p["control_cpu_limit"], p["control_memory"]).set_caching_options(False)
        with dsl.ExitHandler(clean_up):
            steps(**p)

    pipeline.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
    pipeline.__doc__ = steps.pipeline_func.__doc__
    return pipeline


# What runs on Kubeflow Pipelines (and is compiled to the golden file): the steps, then clean_up_run
# whatever became of them.
textrec_pipeline_with_clean_up = dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(
    _with_clean_up(textrec_pipeline))


def compile_pipeline(path: str | os.PathLike = YAML_PATH) -> Path:
    """Compile the pipeline with its exit handler to ``path`` (the golden file by default)."""
    path = Path(path)
    compiler.Compiler().compile(textrec_pipeline_with_clean_up, str(path))
    return path


if __name__ == "__main__":
    out = compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else YAML_PATH)
    print(f"wrote {out}")
