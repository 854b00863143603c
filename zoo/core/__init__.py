"""The shared attention core: one multi-head attention, the blocks built on it, positions.

Imports only torch.
"""

from .attention import (BACKENDS, KVCache, MultiHeadAttention, attention_backend, causal_mask, get_backend,
                        lengths_to_padding_mask, math_attention, sdpa_attention, set_backend)
from .layers import MIXERS, DecoderBlock, EncoderBlock, FeedForward, token_mixer
from .position import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table
from .ssm import MambaMixer, SSMCache

__all__ = [
    "BACKENDS", "KVCache", "MultiHeadAttention", "attention_backend", "causal_mask", "get_backend",
    "lengths_to_padding_mask",
    "math_attention", "sdpa_attention", "set_backend", "DecoderBlock", "EncoderBlock", "FeedForward",
    "LearnedPositionalEmbedding", "SinusoidalPositionalEncoding", "sinusoidal_table", "MambaMixer", "SSMCache",
    "MIXERS", "token_mixer",
]
