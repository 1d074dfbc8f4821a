from typing import NamedTuple

from kfp import dsl

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy_model(model_uri: str, promoted: bool, mlflow_uri: str, model_store_uri: str, deployment: str,
                 namespace: str, target: str = "cluster", task: str = "line"
                 ) -> NamedTuple("Deployment", [("changed", bool), ("version", str), ("reason", str)]):
    """Serve the registered model at model_uri (models:/NAME/VERSION) when the promotion gate made it
    the champion (promoted) and it is not served already. The serving workload named deployment
    (namespace; empty = this pod's namespace) says which runtime it runs: for TorchServe the step
    uploads a .mar to model_store_uri, for the OIP server (runtime kserve, a Deployment or a KServe
    InferenceService) the model.pt; then it patches the workload so its pods roll onto the new version.
    target 'local' rolls the servers running on the same machine instead (see `make serve`); 'none'
    serves nothing. task 'page' (a textrec-page model) moves only what serves pages; a line model also
    moves the page endpoint of a local TorchServe unless a page model is champion. The step always runs and says in reason what it did and why,
    so a run never skips serving silently."""
    import os
    from collections import namedtuple

    from serving.deploy import deploy_step

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    r = deploy_step(model_uri, promoted=promoted, target=target, model_store_uri=model_store_uri,
                    namespace=namespace, deployment=deployment, task=task)
    print(r.reason)
    return namedtuple("Deployment", ["changed", "version", "reason"])(r.changed, r.version or "", r.reason)
