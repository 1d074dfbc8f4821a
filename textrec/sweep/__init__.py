"""Hyperparameter sweeps: a sweep file (:mod:`.spec`) run as an Optuna study on this machine
(:mod:`.study`, ``textrec sweep``) or as a Katib Experiment on a cluster (:mod:`.katib`).

Importing this package costs nothing: Optuna, MLflow and torch are imported where they are used.
"""

from textrec.sweep.spec import Param, Pruner, SweepError, SweepSpec, load_spec, parse_spec

__all__ = ["Param", "Pruner", "SweepError", "SweepSpec", "load_spec", "parse_spec"]
