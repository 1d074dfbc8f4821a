from kfp import dsl

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def clean_up_run(status: dsl.PipelineTaskFinalStatus, nodes: int, pipeline_run_id: str, mlflow_uri: str,
                 experiment: str):
    """The pipeline's exit task: runs after every other step, whatever became of them. When the run did
    not succeed it deletes the run's TrainJob/PyTorchJob (nodes > 1), which would otherwise go on holding
    its nodes with nobody waiting for it, and marks the run's MLflow parent run FAILED (KILLED when the
    run was cancelled): a step pod that was killed (out of memory, evicted) never closed it. A successful
    run is left as its steps recorded it."""
    from textrec.tracking import mlflow_client, parent_run

    print(f"pipeline run {pipeline_run_id}: {status.state} {status.error_message or ''}".rstrip())
    if status.state == "SUCCEEDED":
        return
    if nodes > 1:  # first the nodes, which cost the most: MLflow may be what failed
        from cluster.cleanup import delete_run_job

        deleted = delete_run_job(pipeline_run_id)
        print(f"deleted {deleted}" if deleted else "no training job of this run was left")
    parent = parent_run(pipeline_run_id, experiment=experiment, tracking_uri=mlflow_uri)
    mlflow_client(mlflow_uri).set_terminated(parent, status="KILLED" if status.state == "CANCELLED" else "FAILED")
