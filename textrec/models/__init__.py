"""Line recognition models: a registry plus one file per architecture (importing this registers them)."""

from textrec.models import line_cnn_lstm, resnet_transformer  # noqa: F401  (registers the models)
from textrec.models.registry import LineModel, create_model, list_models, model_config, register_model

__all__ = ["LineModel", "create_model", "list_models", "model_config", "register_model"]
