"""Serving textrec with TorchServe.

- ``serving.handler``: the TorchServe handler (a thin wrapper over ``textrec.recognizer.Recognizer``).
- ``serving.archive``: a ``.mar`` from ``models:/textrec-line@champion`` or a local ``model.pt``.
- ``serving.config``: ``ServeConfig``, the one source of TorchServe's ``config.properties`` (local
  server, serving image, Helm chart).
- ``serving.torchserve``: ``TorchServeProcess``, a TorchServe on this machine: start, stop, tokens,
  predictions, model management and live version swaps.
- ``serving.deploy``: ``serve`` (what ``make serve`` runs) and ``deploy_model`` (local swap, or a
  cluster rollout through ``cluster.rollout``).
- ``serving.cli``: ``python -m serving serve|deploy|stop``.

See docs/serving.md for why the server is configured the way it is.
"""
