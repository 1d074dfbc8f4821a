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
"""

import os
import sys
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes

from components import (
    COMPONENT_IMAGE,
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
YAML_PATH = Path(__file__).with_name("textrec_pipeline.yaml")
ACCELERATOR = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # the label NVIDIA's GPU feature discovery sets
S3_SECRET = "textrec-s3"  # optional Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3 access
TRAIN_RETRIES = 2


class PipelineOutputs(NamedTuple):
    """What a run produced: the registered version, whether it became the champion, and whether (and
    why not) serving moved to it."""

    model_uri: str
    version: str
    promoted: bool
    deployed: bool
    serving: str


def _s3_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """S3 credentials from the optional Secret, for steps that read or write s3:// URIs."""
    return kubernetes.use_secret_as_env(
        task, secret_name=S3_SECRET, optional=True,
        secret_key_to_env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                           "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})


@dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and register a handwritten line recognizer.")
def textrec_pipeline(
    data_source: str = "none",
    synth_lines: int = 20000,
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
    model_name: str = MODEL_NAME,
    promotion_margin: float = 0.0,
    mlflow_uri: str = "http://mlflow:5000",
    experiment: str = EXPERIMENT,
    serving_model_store: str = f"s3://textrec/models/{MODEL_NAME}",
    serving_deployment: str = "textrec-serving",
    serving_namespace: str = "",
    serving_target: str = "cluster",
) -> PipelineOutputs:
    """Parameters: data_source 'none' | 'emnist:<uri>' | 'iam:<uri>'; synth_lines synthetic lines to
    render; train_config a training config as YAML text (configs/*.yaml; empty: defaults) with config_overrides
    ('loop.epochs=3', ...) and epochs (0 keeps the config's); gpus_per_node and nodes (> 1 runs a
    TrainJob/PyTorchJob); checkpoint_root an s3:// prefix or mounted folder for resumable checkpoints;
    real_val labelled real lines (a TSV of image<TAB>text rows, an IAM lines folder, or an s3:// URI of
    either; empty: none) that training picks its best checkpoint by and that evaluation and the promotion
    gate score beside the synthetic test CER; promotion_margin how much lower the test CER (real_val CER
    when the champion was scored on the same real set) must be to replace the champion; serving_* where a new
    champion goes: the model store prefix its .mar is uploaded to and the Deployment that is rolled
    (serving_namespace empty = the pipeline's own namespace); serving_target 'cluster', 'local' (a
    TorchServe on the same machine) or 'none' (register only)."""
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

    ingest = _s3_credentials(ingest_data(data_source=data_source))
    ingest.set_caching_options(True)
    lines = synthesize_lines(n_lines=synth_lines, seed=seed, emnist_lines=emnist_lines,
                             source=ingest.outputs["dataset"], train_config=train_config,
                             config_overrides=config_overrides)
    lines.set_caching_options(True)
    plan = plan_training(gpus_per_node=gpus_per_node, nodes=nodes, gpu_node_selector=gpu_node_selector)
    plan.set_caching_options(True)

    train = train_model(lines=lines.outputs["lines"], train_config=train_config,
                        config_overrides=config_overrides, epochs=epochs, gpus_per_node=gpus_per_node,
                        nodes=nodes, gpu_node_selector=gpu_node_selector, checkpoint_root=checkpoint_root,
                        real_val=real_val, pipeline_run_id=run_id, mlflow_uri=mlflow_uri, experiment=experiment)
    train.set_caching_options(False).set_retry(TRAIN_RETRIES, backoff_duration="30s")
    train.set_accelerator_type(ACCELERATOR).set_accelerator_limit(plan.outputs["pod_gpus"])
    kubernetes.add_node_selector_json(train, plan.outputs["node_selector"])
    kubernetes.add_toleration(train, key=ACCELERATOR, operator="Exists", effect="NoSchedule")
    train.set_env_variable("TEXTREC_IMAGE", COMPONENT_IMAGE)  # the image of a multi-node job's pods
    train.set_env_variable("TEXTREC_S3_SECRET", S3_SECRET)
    _s3_credentials(train)

    evaluation = evaluate_cer(model=train.outputs["model"], lines=lines.outputs["lines"], real_val=real_val,
                              pipeline_run_id=run_id, mlflow_uri=mlflow_uri, experiment=experiment)
    evaluation.set_caching_options(False)
    _s3_credentials(evaluation)  # real_val may be on S3

    register = register_model(model=train.outputs["model"], lines=lines.outputs["lines"],
                              test_cer=evaluation.outputs["cer"],
                              eval_set_hash=evaluation.outputs["eval_set_hash"],
                              real_val_cer=evaluation.outputs["real_val_cer"],
                              real_val_hash=evaluation.outputs["real_val_hash"], model_name=model_name,
                              promotion_margin=promotion_margin, pipeline_run_id=run_id,
                              mlflow_uri=mlflow_uri, experiment=experiment)
    register.set_caching_options(False)
    _s3_credentials(register)

    # Always runs, and serves only a new champion: the step decides from the gate's outputs instead of
    # sitting in dsl.If branches, which kfp.local could not evaluate (it skipped them without a word).
    deploy = deploy_model(model_uri=register.outputs["model_uri"], promoted=register.outputs["promoted"],
                          mlflow_uri=mlflow_uri, model_store_uri=serving_model_store,
                          deployment=serving_deployment, namespace=serving_namespace, target=serving_target)
    deploy.set_caching_options(False)
    _s3_credentials(deploy)

    return PipelineOutputs(register.outputs["model_uri"], register.outputs["version"],
                           register.outputs["promoted"], deploy.outputs["changed"], deploy.outputs["reason"])


def compile_pipeline(path: str | os.PathLike = YAML_PATH) -> Path:
    """Compile to ``path`` (the golden file by default)."""
    path = Path(path)
    compiler.Compiler().compile(textrec_pipeline, str(path))
    return path


if __name__ == "__main__":
    out = compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else YAML_PATH)
    print(f"wrote {out}")
