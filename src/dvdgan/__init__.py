"""dvdgan: DVD-GAN (Clark, Donahue & Simonyan, 2019) for video synthesis and prediction.

    import dvdgan
    cfg = dvdgan.get_preset("shapes")
    dvdgan.train(cfg, "runs/shapes")                          # the trainer (torchrun-ready)
    videos = dvdgan.generate("runs/shapes", classes=[0, 1], n=8, truncation=0.5)  # uint8 [N, T, H, W, 3]

The trainer and the sampler are imported when first used, so ``import dvdgan.sampling`` (or a
command that only samples) never loads the training code.
"""

from dvdgan.config import Config, DataConfig, ModelConfig, TrainConfig, get_preset, load_config

__version__ = "0.1.0"

_LAZY = {"train": "dvdgan.training", "generate": "dvdgan.sampling", "load_generator": "dvdgan.sampling"}

__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainConfig", "generate", "get_preset", "load_config", "load_generator",
    "train", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dvdgan' has no attribute {name!r}")
