from typing import NamedTuple

from kfp import dsl

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def plan_training(gpus_per_node: int, nodes: int, gpu_node_selector: dict
                  ) -> NamedTuple("TrainingPlan", [("pod_gpus", int), ("node_selector", dict)]):
    """Decide the train step's own pod: gpus_per_node GPUs on a GPU node when it trains on one node;
    no GPU and no GPU node when it trains on the CPU or only launches a multi-node job."""
    from collections import namedtuple

    from textrec.training.job import pod_plan

    return namedtuple("TrainingPlan", ["pod_gpus", "node_selector"])(*pod_plan(gpus_per_node, nodes, gpu_node_selector))
