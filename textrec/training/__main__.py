"""One training process: alone, one rank under ``torchrun``, or one node's rank of a multi-node job.

    python -m textrec.training --config-yaml "$(cat config.yaml)" --out /tmp/run [--checkpoint-uri s3://...]

Rank 0 logs to the MLflow run given and mirrors checkpoints to ``--checkpoint-uri``; every rank
resumes from the last checkpoint found there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m textrec.training",
                                description="Run one training process (alone, or one rank under torchrun).")
    p.add_argument("--config-yaml", required=True, help="the full training config, as YAML text")
    p.add_argument("--out", required=True, help="this node's training folder")
    p.add_argument("--checkpoint-uri", default="", help="s3:// prefix to resume from and save to")
    p.add_argument("--run-id", default="", help="MLflow run to log to (rank 0 only)")
    p.add_argument("--tracking-uri", default="")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import yaml

    from textrec.config import from_dict
    from textrec.training.config import TrainConfig
    from textrec.training.job import train_here

    a = parse_args(argv)
    cfg = from_dict(TrainConfig, yaml.safe_load(a.config_yaml) or {})
    train_here(cfg, a.out, checkpoint_uri=a.checkpoint_uri, run_id=a.run_id, tracking_uri=a.tracking_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
