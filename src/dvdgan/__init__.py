"""dvdgan: DVD-GAN (Clark, Donahue & Simonyan, 2019) for video synthesis and prediction.

    import dvdgan
    cfg = dvdgan.get_preset("shapes")
    dvdgan.train(cfg, "runs/shapes")                          # the trainer (torchrun-ready)
    videos = dvdgan.generate("runs/shapes", classes=[0, 1], n=8, truncation=0.5)  # uint8 [N, T, H, W, 3]
"""

from dvdgan.config import Config, DataConfig, ModelConfig, TrainConfig, get_preset, load_config
from dvdgan.sampling import generate_from_checkpoint as generate
from dvdgan.sampling import load_generator
from dvdgan.training import train

__version__ = "0.1.0"

__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainConfig", "generate", "get_preset", "load_config", "load_generator",
    "train", "__version__",
]
