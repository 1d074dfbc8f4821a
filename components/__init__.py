"""The pipeline's KFP components, one per file. Each is a short typed function that calls textrec.

Every component runs in the project's component image: ``TEXTREC_IMAGE`` at compile time, else
``ghcr.io/textrec/textrec-component:<textrec version>``. The image already holds textrec and kfp,
so components install nothing when their pod starts (``install_kfp_package=False``).
"""

import os

from textrec import __version__

COMPONENT_IMAGE = os.environ.get("TEXTREC_IMAGE") or f"ghcr.io/textrec/textrec-component:{__version__}"

# The components import COMPONENT_IMAGE from this package, so they come after it.
from components.deploy_model import deploy_model  # noqa: E402
from components.evaluate_cer import evaluate_cer  # noqa: E402
from components.ingest_data import ingest_data  # noqa: E402
from components.plan_training import plan_training  # noqa: E402
from components.register_model import register_model  # noqa: E402
from components.synthesize_lines import synthesize_lines  # noqa: E402
from components.train_model import train_model  # noqa: E402

__all__ = ["COMPONENT_IMAGE", "deploy_model", "evaluate_cer", "ingest_data", "plan_training", "register_model",
           "synthesize_lines", "train_model"]
