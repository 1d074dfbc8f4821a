"""Serving textrec with TorchServe.

- ``serving.handler``: the TorchServe handler (a thin wrapper over ``textrec.recognizer.Recognizer``).
- ``serving.archive``: a ``.mar`` from ``models:/textrec-line@champion`` or a local ``model.pt``.
- ``serving.config``: the hardened ``config.properties``.
- ``serving.local``: start/stop a local TorchServe and roll new versions into it (``deploy_model``).

See docs/serving.md for why the server is configured the way it is.
"""
