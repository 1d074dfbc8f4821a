"""Training: typed config, the loop (one CPU process or N DDP ranks), callbacks, exact resume.

    from textrec.training import load_config, train
    metrics = train(load_config("configs/cpu.yaml", ["--loop.epochs=3"]), Path("runs/cpu"))
"""

from textrec.training.callbacks import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    ProgressBar,
    TimeBudget,
)
from textrec.training.config import (
    DataConfig,
    DecodeConfig,
    LoopConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from textrec.training.loop import Trainer, train

__all__ = [
    "BestCheckpoint", "Callback", "DataConfig", "DecodeConfig", "EarlyStopping", "LoopConfig", "ModelConfig",
    "OptimConfig", "ProgressBar", "TimeBudget", "TrainConfig", "Trainer", "load_config", "train",
]
