"""Training: the trainer, EMA, checkpoints and torch.distributed set-up."""

from dvdgan.training.trainer import Trainer, train

__all__ = ["Trainer", "train"]
