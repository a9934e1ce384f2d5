"""DVD-GAN networks: generator, dual discriminator and the frame-conditional (FP) variant."""

from dvdgan.models.discriminators import DualDiscriminator, SpatialDiscriminator, TemporalDiscriminator
from dvdgan.models.generator import Generator
from dvdgan.models.layers import power_iteration

__all__ = ["DualDiscriminator", "Generator", "SpatialDiscriminator", "TemporalDiscriminator", "power_iteration"]
