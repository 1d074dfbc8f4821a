"""The pipeline's KFP components, one per file: typed artifacts in, one textrec (or cluster) call,
artifacts out. A running component imports only what its body names, never this package.
"""

from components.clean_up_run import clean_up_run
from components.deploy_model import deploy_model
from components.evaluate_cer import evaluate_cer
from components.image import COMPONENT_IMAGE
from components.ingest_data import ingest_data
from components.plan_training import plan_training
from components.register_model import register_model
from components.synthesize_lines import synthesize_lines
from components.train_model import train_model

__all__ = ["COMPONENT_IMAGE", "clean_up_run", "deploy_model", "evaluate_cer", "ingest_data", "plan_training", "register_model",
           "synthesize_lines", "train_model"]
