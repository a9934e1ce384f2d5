"""dvdgan: DVD-GAN (Clark, Donahue & Simonyan, 2019) for video synthesis and prediction."""

from dvdgan.config import Config, DataConfig, ModelConfig, TrainConfig, get_preset, load_config

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "get_preset", "load_config", "__version__"]
