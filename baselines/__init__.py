"""The classic rivals of the transformers. Importing ``baselines`` registers its models."""

from . import cnn  # noqa: F401  (registers "resnet", "kws_resnet")
from . import lstm, seq2seq  # noqa: F401  (register "lstm", "bilstm_ctc", "lstm_classifier", "lstm_seq2seq", "las")
from . import iql, mlp  # noqa: F401  (register "iql", "bc_mlp", "bc_top10"; lstm registers "decision_lstm")
