"""Recurrent baselines: language model, speech recogniser (CTC), audio classifier, Decision LSTM.

``lstm``: the LSTM language model of Zaremba et al. 2014 ("Recurrent Neural Network
Regularization") with the tied input/output embeddings of Press & Wolf 2017 and Inan et al. 2017:
embedding -> dropout -> multi-layer LSTM (dropout between layers) -> dropout -> linear head. When
the LSTM is wider than the embedding and the weights are tied, a linear projection brings the
hidden state down to the embedding width first (as in AWD-LSTM's last layer, done with a matrix).

``generate`` has the semantics of ``zoo.transformer.GPT.generate`` but carries the LSTM state from
step to step instead of re-reading the prefix, and has no context window to crop to.

``decision_lstm``: the Decision LSTM (Siebenborn et al. 2022, arXiv 2211.14655, "How Crucial is
Transformer in Decision Transformer?"): the Decision Transformer with its GPT swapped for an LSTM,
all else equal: the same (R, s, a) tokens, timestep embedding, LayerNorm and heads
(``zoo.trajectory.TrajectoryModel``).

Speech (audio features (B, T, F)), both over the pyramidal BiLSTM of Listen, Attend and Spell
(``baselines.rnn.PyramidalListener``), which reads the features at a quarter of their frame
rate, as the Conformer's convolutional front end does:

``bilstm_ctc``: a deep bidirectional LSTM trained with CTC (Graves et al. 2006, "Connectionist
Temporal Classification"; Graves et al. 2013, "Speech Recognition with Deep Recurrent Neural
Networks"): BiLSTM layers -> linear -> log_softmax over the vocabulary and the blank. CTC models
need not emit at the feature rate: Sak et al. 2015 ("Fast and Accurate Recurrent Neural Network
Acoustic Models for Speech Recognition") stack frames and emit every third one. Here pairs of
feature frames are stacked, and one pyramid layer (Chan et al. 2016) halves the rate again.

``lstm_classifier``: the same BiLSTM encoder, the mean of its outputs over the (real) frames, and a
linear layer. The LSTM keyword spotters of Zhang et al. 2017 ("Hello Edge: Keyword Spotting on
Microcontrollers") classify from the last step instead; the mean is the Conformer classifier's
pooling (``zoo.conformer.ConformerClassifier``), so that only the encoders differ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo.core.decoding import sample_next
from zoo.options import DROPOUT
from zoo.registry import register_model
from zoo.trajectory import DEFAULT_INIT, DT_PAPER_RECIPE, INITS, TrajectoryModel, trajectory_spec

from .rnn import LSTMState, PyramidalListener, TiedHead, init_lstm_, lstm_flops

class LSTMLanguageModel(nn.Module):
    """idx (B, T) -> logits (B, T, V), like ``GPT``; ``forward_with_state`` also takes and returns
    the LSTM state (h, c)."""

    def __init__(self, vocab_size: int, *, hidden_dim: int = 650, num_layers: int = 2,
                 embed_dim: int | None = None, dropout: float = 0.5, tie_weights: bool = True,
                 block_size: int | None = None) -> None:
        super().__init__()
        embed_dim = embed_dim or hidden_dim
        self.vocab_size, self.hidden_dim, self.num_layers = vocab_size, hidden_dim, num_layers
        self.block_size = block_size  # the task's training length; the LSTM itself has no window
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = TiedHead(hidden_dim, vocab_size, self.embed if tie_weights else None)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)  # Zaremba et al.; a tied N(0, 1) table gives huge logits
        init_lstm_(self.lstm)

    def forward_with_state(self, idx: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """idx (B, T) continuing ``state`` (None: a fresh start) -> logits (B, T, V) and the new state.
        Carrying the state across batches gives truncated backpropagation through time."""
        out, state = self.lstm(self.dropout(self.embed(idx)), state)  # (B, T, H)
        return self.head(self.dropout(out)), state

    def forward(self, idx: Tensor) -> Tensor:
        """idx (B, T) -> logits (B, T, V)."""
        return self.forward_with_state(idx)[0]

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Continue idx (B, T) by ``max_new_tokens`` sampled tokens (temperature 0: greedy).

        The prefix is read once and the LSTM state carried; ``use_cache=False`` re-reads the whole
        sequence at every step instead (same tokens, slower: for tests and parity with ``GPT``).
        """
        was_training = self.training
        self.eval()
        try:
            state, step_input = None, idx  # first step: the whole prefix
            for _ in range(max_new_tokens):
                if use_cache:
                    logits, state = self.forward_with_state(step_input, state)
                else:
                    logits = self(idx)
                nxt = sample_next(logits[:, -1], temperature, top_k, generator)
                idx, step_input = torch.cat([idx, nxt], dim=1), nxt
            return idx
        finally:
            self.train(was_training)


# Sizes. Each matches the GPT of the same size within 10% in parameters for byte/character
# vocabularies (tests/test_rnn_baselines.py checks V = 100 and 256 at block_size 128); dropout is
# the GPT preset's, so that the rivals differ in architecture only. With tying, the embedding is the
# only vocabulary-sized matrix, as in GPT.
LSTM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=224, num_layers=2, embed_dim=None, dropout=0.0, tie_weights=True),
    "small": dict(hidden_dim=816, num_layers=2, embed_dim=None, dropout=0.2, tie_weights=True),
    "base": dict(hidden_dim=1880, num_layers=3, embed_dim=None, dropout=0.1, tie_weights=True),
}


@register_model("lstm", family="baseline", kinds=("language_modeling",), lr=2e-3, weight_decay=0.0,
                presets=LSTM_PRESETS, width="hidden_dim", width_scales=("embed_dim",), extra_flops=lstm_flops,
                bounds={"dropout": DROPOUT})
def lstm(spec: dict[str, Any], **cfg: Any) -> LSTMLanguageModel:
    """LSTM language model (Zaremba et al. 2014) with tied embeddings (Press & Wolf 2017)."""
    return LSTMLanguageModel(spec["vocab_size"], block_size=spec.get("block_size"), **cfg)


class BiLSTMCTC(nn.Module):
    """The transcription contract with ``decoding = "ctc"`` (tasks/base.py): forward(feats (B, T, F),
    lengths (B,) or None) -> (log_probs (B, T', V), out_lengths (B,)), T' = T // 4 with the default
    ``reductions``; ``blank`` is a vocabulary index like any other to the head."""

    decoding = "ctc"

    def __init__(self, input_dim: int, vocab_size: int, *, hidden_dim: int = 256,
                 reductions: tuple[int, ...] = (2, 2, 1), dropout: float = 0.1, blank: int = 0) -> None:
        super().__init__()
        self.blank = blank
        self.encoder = PyramidalListener(input_dim, hidden_dim, reductions, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, lengths, _ = self.encoder(feats, lengths)  # (B, T', H), (B,)
        return self.head(self.dropout(h)).log_softmax(dim=-1), lengths


class LSTMClassifier(nn.Module):
    """forward(x (B, T, F), lengths (B,) or None) -> logits (B, C): BiLSTM encoder, mean over the
    real output frames, dropout, linear."""

    def __init__(self, input_dim: int, num_classes: int, *, hidden_dim: int = 256,
                 reductions: tuple[int, ...] = (2, 2, 1), dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = PyramidalListener(input_dim, hidden_dim, reductions, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, lengths, _ = self.encoder(x, lengths)  # (B, T', H), zeros at padding
        pooled = h.sum(1) / lengths.clamp(min=1)[:, None].to(h.device, h.dtype, non_blocking=True)  # (B, H)
        return self.head(self.dropout(pooled))


# Sizes: a BiLSTM over pairs of stacked feature frames, a pyramid layer (x4 fewer frames in all, as
# the Conformer's front end), then layers at that rate, up to the five layers of Graves et al. 2013's
# deepest TIMIT models at base. Stacking instead of a first layer over every frame (LAS's listener)
# more than halves the CPU time of the tiny CTC model at the same parameters (about 0.6 -> 0.25 s a
# training step on 32 x 300 frames, 2 threads; the tiny Conformer: 0.28 s). The width matches the
# Conformer of the same size (on either task kind) within 10% in parameters
# (tests/test_speech_models.py). Dropout is the Conformer preset's. One preset serves both models.
BILSTM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=208, reductions=(2, 2, 1), dropout=0.1),
    "small": dict(hidden_dim=424, reductions=(2, 2, 1, 1), dropout=0.1),
    "base": dict(hidden_dim=528, reductions=(2, 2, 1, 1, 1), dropout=0.1),
}


@register_model("bilstm_ctc", family="baseline", kinds=("transcription",), modalities=("audio",), lr=2e-3,
                weight_decay=0.0, presets=BILSTM_PRESETS, width="hidden_dim", width_multiple=2, extra_flops=lstm_flops,
                bounds={"dropout": DROPOUT})
def bilstm_ctc(spec: dict[str, Any], **cfg: Any) -> BiLSTMCTC:
    """Deep bidirectional LSTM with CTC (Graves et al. 2013), x4 fewer frames by stacking and a pyramid."""
    return BiLSTMCTC(spec["input_dim"], spec["vocab_size"], blank=spec.get("blank_id", 0), **cfg)


@register_model("lstm_classifier", family="baseline", kinds=("classification",), modalities=("audio",), lr=2e-3,
                weight_decay=0.0, presets=BILSTM_PRESETS, width="hidden_dim", width_multiple=2, extra_flops=lstm_flops,
                bounds={"dropout": DROPOUT})
def lstm_classifier(spec: dict[str, Any], **cfg: Any) -> LSTMClassifier:
    """BiLSTM over audio features (x4 fewer frames by stacking and a pyramid), mean-pooled, linear head."""
    _, input_dim = spec["input_shape"]
    return LSTMClassifier(input_dim, spec["num_classes"], **cfg)


class DecisionLSTM(TrajectoryModel):
    """The Decision Transformer's tokens and heads around a multi-layer LSTM over the 3K tokens.

    The LSTM is ``lstm_dim`` wide (wider than the tokens, to match the DT's parameters); when it
    differs from ``hidden_dim`` a linear layer brings its output back to the width of the shared heads.

    Padding: the DT's windows are left-padded (mask 0 at the first steps of short windows). An LSTM
    cannot skip keys as attention does, so the padding tokens are multiplied by the mask (zeroed, after
    the LayerNorm, timestep embedding included) before the LSTM reads them: the outputs at real steps do
    not depend on the *values* at padded steps. They still depend on *how many* padded steps precede
    (the LSTM runs its biases over the zero inputs), as the DT does not; training sees the same padding
    as evaluation, so the model learns with it.

    ``init``: how the shared tokens and heads start (``zoo.trajectory.INITS``), as the DT's option, with
    the same default (``zoo.trajectory.DEFAULT_INIT``): only the trunk differs from the DT's. The LSTM
    itself keeps ``baselines.rnn.init_lstm_`` whatever ``init`` says.
    """

    def __init__(self, state_dim: int, act_dim: int, *, hidden_dim: int = 128, lstm_dim: int | None = None,
                 num_layers: int = 3, dropout: float = 0.1, max_ep_len: int = 4096, discrete: bool = False,
                 action_tanh: bool | None = None, context_len: int | None = None, init: str = DEFAULT_INIT) -> None:
        super().__init__(state_dim, act_dim, hidden_dim=hidden_dim, max_ep_len=max_ep_len, discrete=discrete,
                         action_tanh=action_tanh, dropout=dropout, context_len=context_len, init=init)
        lstm_dim = lstm_dim or hidden_dim
        self.lstm = nn.LSTM(hidden_dim, lstm_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.out_proj = nn.Linear(lstm_dim, hidden_dim) if lstm_dim != hidden_dim else nn.Identity()
        init_lstm_(self.lstm)

    def trunk(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, 3K, H), (B, 3K) -> (B, 3K, H)
        x = x * mask[..., None].to(x.dtype)  # zero the padding tokens
        out, _ = self.lstm(x)  # (B, 3K, lstm_dim)
        return self.out_proj(out)


# Sizes: the DT preset's token width and layer count, the LSTM widened so that the whole model matches
# the DT of the same size within 10% in parameters (an LSTM layer has 8 H^2 weights, a GPT block 12 H^2).
DECISION_LSTM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=64, lstm_dim=78, num_layers=3, dropout=0.0, init=DEFAULT_INIT),
    "small": dict(hidden_dim=128, lstm_dim=156, num_layers=3, dropout=0.1, init=DEFAULT_INIT),
    "base": dict(hidden_dim=256, lstm_dim=312, num_layers=6, dropout=0.1, init=DEFAULT_INIT),
}


# Training defaults: the Decision Transformer's (see zoo.decision_transformer), so that only the trunk differs.
@register_model("decision_lstm", family="baseline", kinds=("offline_rl",), lr=1e-3, weight_decay=1e-4,
                size_defaults={"small": DT_PAPER_RECIPE},  # the DT's, all else equal
                presets=DECISION_LSTM_PRESETS, width="hidden_dim", width_scales=("lstm_dim",),
                extra_flops=lstm_flops, bounds={"dropout": DROPOUT}, choices={"init": INITS})
def decision_lstm(spec: dict[str, Any], **cfg: Any) -> DecisionLSTM:
    """Decision LSTM (Siebenborn et al. 2022): the Decision Transformer with an LSTM for its GPT."""
    return DecisionLSTM(spec["state_dim"], spec["act_dim"], **trajectory_spec(spec), **cfg)
