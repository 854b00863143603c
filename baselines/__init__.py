"""The classic rivals of the transformers. Importing ``baselines`` registers its models."""

from . import cnn  # noqa: F401  (registers "resnet")
