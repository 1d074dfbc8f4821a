from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train_model(lines: Input[Dataset], train_config: str, config_overrides: list, epochs: int,
                gpus_per_node: int, nodes: int, gpu_node_selector: dict, checkpoint_root: str,
                real_val: str, pipeline_run_id: str, mlflow_uri: str, experiment: str,
                model: Output[Model], metrics: Output[Metrics], reviewed_store: str = "",
                reviewed_weight: float = 0.0):
    """Train the line recognizer on the merged line stores (train_config: YAML text of a training
    config, config_overrides: 'loop.epochs=3'-style overrides): in this pod on the CPU or one GPU, with
    torchrun over gpus_per_node GPUs, or on several nodes as a TrainJob/PyTorchJob. Checkpoints go to
    checkpoint_root under a key of the pipeline run, so a retry resumes from the last one. real_val (a
    labelled real set: TSV, IAM lines folder or s3:// URI; empty: none) is scored every epoch and picks the
    best checkpoint. A config with data.kind 'pages' (a paragraph model) trains on the dataset's page
    store (pages.h5: set the pipeline's synth_pages) instead; real_val then holds pages and is left to
    evaluation. reviewed_store (a folder or s3:// prefix written by `textrec review`): its validation
    lines are the real validation set when real_val is empty, and with reviewed_weight > 0 its training
    lines are mixed into training, each counting reviewed_weight times per epoch; the run records the
    store (tag textrec.reviewed_store) and its line counts (reviewed_train_lines, reviewed_val_lines)."""
    from cluster.trainjob import launch_multi_node
    from textrec.metrics import numeric
    from textrec.tracking import StepTracking
    from textrec.training.job import TrainRequest, pipeline_training_inputs, store_uris, train_from_request

    inputs = pipeline_training_inputs(lines.path, train_config, [str(o) for o in config_overrides],
                                      real_val=real_val, reviewed_store=reviewed_store,
                                      reviewed_weight=reviewed_weight)
    request = TrainRequest(
        stores=inputs.stores, store_uris=store_uris(lines.uri, inputs.stores), config=inputs.config,
        overrides=tuple(config_overrides), epochs=epochs, gpus_per_node=gpus_per_node, nodes=nodes,
        job_node_selector=gpu_node_selector, checkpoint_root=checkpoint_root, real_val=inputs.real_val,
        step=StepTracking(pipeline_run_id, mlflow_uri, experiment), extra_tags=inputs.tags,
        extra_metrics=inputs.metrics)
    result = train_from_request(request, model.path, multi_node=launch_multi_node)
    model.metadata.update({k: result[k] for k in ("dataset_hash", "mlflow_run_id", "checkpoints")})
    for name, value in numeric(result).items():
        metrics.log_metric(name, value)
