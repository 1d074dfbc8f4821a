from typing import NamedTuple

from kfp import dsl

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy_model(model_uri: str, mlflow_uri: str, model_store_uri: str, deployment: str, namespace: str,
                 target: str = "cluster"
                 ) -> NamedTuple("Deployment", [("changed", bool), ("version", str), ("reason", str)]):
    """Serve the registered model at model_uri (models:/NAME/VERSION) if it is not served already:
    archive it for TorchServe, upload the .mar to model_store_uri and patch the serving Deployment
    (namespace; empty = this pod's namespace) so its pods roll onto the new version. When that version
    is already served nothing changes, and reason says so. target 'local' rolls a TorchServe on the
    same machine instead (see `make serve`)."""
    import os
    from collections import namedtuple

    from cluster.client import current_namespace
    from serving.deploy import deploy_model as deploy

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    ns = namespace or current_namespace()
    r = deploy(model_uri, target=target, model_store_uri=model_store_uri, namespace=ns, deployment=deployment)
    print(r.reason)
    return namedtuple("Deployment", ["changed", "version", "reason"])(r.changed, r.version or "", r.reason)
