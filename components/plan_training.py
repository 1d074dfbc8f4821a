from typing import NamedTuple

from kfp import dsl

from components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def plan_training(gpus_per_node: int, nodes: int, gpu_node_selector: dict
                  ) -> NamedTuple("TrainingPlan", [("pod_gpus", int), ("node_selector", dict)]):
    """Decide the train step's own pod: gpus_per_node GPUs on a GPU node when it trains on one node;
    no GPU and no GPU node when it trains on the CPU or only launches a multi-node job."""
    from collections import namedtuple

    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"nodes must be >= 1 and gpus_per_node >= 0, got nodes={nodes}, "
                         f"gpus_per_node={gpus_per_node}")
    on_gpu = nodes == 1 and gpus_per_node > 0
    plan = namedtuple("TrainingPlan", ["pod_gpus", "node_selector"])
    return plan(gpus_per_node if on_gpu else 0, dict(gpu_node_selector) if on_gpu else {})
