"""The classic rivals of the transformers. Importing ``baselines`` registers its models."""

from . import cnn  # noqa: F401  (registers "resnet")
from . import lstm, seq2seq  # noqa: F401  (register "lstm", "lstm_seq2seq")
