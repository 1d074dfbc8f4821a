"""The pipeline's KFP components, one per file. Each is a short typed function that calls textrec.

Every component runs in the project's component image: ``TEXTREC_IMAGE`` at compile time, else
``ghcr.io/textrec/textrec-component:<textrec version>``. The image already holds textrec and kfp,
so components install nothing when their pod starts (``install_kfp_package=False``).
"""

import os

from textrec import __version__

COMPONENT_IMAGE = os.environ.get("TEXTREC_IMAGE") or f"ghcr.io/textrec/textrec-component:{__version__}"

_COMPONENTS = ("deploy_model", "evaluate_cer", "ingest_data", "plan_training", "register_model",
               "synthesize_lines", "train_model")
__all__ = ["COMPONENT_IMAGE", *_COMPONENTS]


def __getattr__(name: str):
    # Loaded on first use, not here: a running component imports components.steps, and the KFP
    # executor's trimmed-down kfp.dsl cannot define components.
    if name in _COMPONENTS:
        import importlib

        component = getattr(importlib.import_module(f"components.{name}"), name)
        globals()[name] = component  # the submodule import bound the module to this name; the function wins
        return component
    raise AttributeError(f"module 'components' has no attribute {name!r}")
