"""Recurrent encoder-decoder baselines with attention: text-to-text and speech-to-text (LAS).

``lstm_seq2seq``: the attentional RNN encoder-decoder of Luong et al. 2015 ("Effective Approaches
to Attention-based Neural Machine Translation"), global attention without input feeding:

    encoder       bidirectional LSTM over the (packed) source; outputs [fwd; bwd] (B, S, H)
    bridge        decoder state (h0, c0) = (tanh(W_h h_enc), W_c c_enc) from the encoder's final states
    decoder       LSTM over the target embeddings: h_t
    attention     context c_t = attention(h_t, encoder outputs), by the zoo's shared MultiHeadAttention
                  (one head by default: a bilinear score like Luong's "general" one) with the source
                  padding masked out
    output        h~_t = tanh(W_c [c_t; h_t]) -> dropout -> linear head (tied to the target embedding)

Without input feeding, h_t does not depend on earlier attention, so teacher-forced training runs
the decoder LSTM and the attention over the whole target at once. Decoding (greedy and beam) is
``zoo.core.decoding``'s, through ``init_state`` / ``decode_step`` / ``reorder_state``.

The pieces (``baselines.rnn.RNNEncoder``, :class:`Bridge`, :class:`LuongAttention`,
:class:`AttentionDecoder`) take embedded/feature inputs rather than tokens; the decoder side (target
embedding, bridge, attentional decoder, tied head, the three decoding methods) is
:class:`AttentionalEncoderDecoder`, which both models below extend with their own encoder.

``las``: Listen, Attend and Spell (Chan et al. 2016, "Listen, Attend and Spell: A Neural Network
for Large Vocabulary Conversational Speech Recognition"):

    listener      pyramidal BiLSTM (``baselines.rnn.PyramidalListener``): a BiLSTM over the features, then
                  pyramid layers that each concatenate pairs of consecutive frames (halving the time,
                  T -> T // 2) before their BiLSTM: x8 fewer frames after three, as in the paper
    speller       the decoder of ``lstm_seq2seq`` above, attending over the listener's outputs

Differences from the paper, all shared with ``lstm_seq2seq``: Luong's global attention through the
shared core attention instead of Bahdanau's MLP score, no input feeding (so teacher-forced training
runs the speller over the whole target at once), and the speller's initial state bridged from the
listener's final state. The same pyramid is the encoder of the BiLSTM-CTC and LSTM classifier
baselines in ``baselines.lstm``. ``extra_flops``: ``baselines.rnn.lstm_flops``.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from zoo.core import KVCache, MultiHeadAttention, lengths_to_padding_mask
from zoo.core.decoding import Seq2SeqDecoder
from zoo.options import DROPOUT
from zoo.registry import register_model

from .rnn import LSTMState, PyramidalListener, RNNEncoder, TiedHead, init_lstm_, lstm_flops


class Bridge(nn.Module):
    """The encoder's top-layer final state (B, D) -> the decoder's initial state (h0, c0), each
    (num_layers, B, H): h0 = tanh(W_h h), c0 = W_c c, one slice of H per decoder layer."""

    def __init__(self, enc_dim: int, hidden_dim: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.h = nn.Linear(enc_dim, num_layers * hidden_dim)
        self.c = nn.Linear(enc_dim, num_layers * hidden_dim)

    def forward(self, state: LSTMState) -> LSTMState:
        h, c = state[0][-1], state[1][-1]  # (B, D)
        B = h.shape[0]

        def layers(x: Tensor) -> Tensor:  # (B, L * H) -> (L, B, H), contiguous as cuDNN wants it
            return x.view(B, self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()

        return layers(torch.tanh(self.h(h))), layers(self.c(c))


class LuongAttention(nn.Module):
    """Global attention with the attentional hidden state of Luong et al. 2015 (eq. 5):
    h~ = tanh(W_c [c; h]) with c = attention(h, memory) by the shared ``MultiHeadAttention``.

    forward(h (B, T, H), memory (B, S, M), key_padding_mask (B, S) True at padding, cache) ->
    h~ (B, T, H) (and the weights (B, heads, T, S) with ``return_weights``). A memory of another
    width than H is projected to H first. ``cache`` (a ``KVCache``) keeps the memory's keys and
    values across decoding steps.
    """

    def __init__(self, dim: int, memory_dim: int | None = None, num_heads: int = 1, *, dropout: float = 0.0) -> None:
        super().__init__()
        memory_dim = memory_dim or dim
        self.memory_proj = nn.Linear(memory_dim, dim, bias=False) if memory_dim != dim else nn.Identity()
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.combine = nn.Linear(2 * dim, dim, bias=False)  # W_c

    def forward(self, h: Tensor, memory: Tensor, key_padding_mask: Tensor | None = None,
                cache: KVCache | None = None, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if cache is None or cache.k is None:
            memory = self.memory_proj(memory)
        out = self.attn(h, memory, key_padding_mask=key_padding_mask, cache=cache, return_weights=return_weights)
        context, weights = out if return_weights else (out, None)
        h_tilde = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))
        return (h_tilde, weights) if return_weights else h_tilde


class AttentionDecoder(nn.Module):
    """An LSTM over (embedded) inputs followed by :class:`LuongAttention` over a memory.

    forward(x (B, T, I), state, memory (B, S, M), memory_pad, cache) -> (h~ (B, T, H), new state).
    Without input feeding the whole target runs at once in training; decoding passes T = 1.
    """

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int, memory_dim: int, *, num_heads: int = 1,
                 dropout: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.attention = LuongAttention(hidden_dim, memory_dim, num_heads, dropout=attn_dropout)
        init_lstm_(self.lstm)

    def forward(self, x: Tensor, state: LSTMState | None, memory: Tensor, memory_pad: Tensor | None = None,
                cache: KVCache | None = None) -> tuple[Tensor, LSTMState]:
        h, state = self.lstm(x, state)
        return self.attention(h, memory, memory_pad, cache), state


class AttentionalEncoderDecoder(Seq2SeqDecoder, nn.Module, metaclass=ABCMeta):
    """The decoder side shared by :class:`RNNSeq2Seq` and :class:`ListenAttendSpell`: target
    embedding -> :class:`AttentionDecoder` (initial state from a :class:`Bridge`) -> :class:`TiedHead`,
    with ``forward`` and ``init_state`` / ``decode_step`` / ``reorder_state`` for ``zoo.core.decoding``.

    A subclass sets ``tgt_embed``, builds its encoder, calls :meth:`build_decoder` and implements
    ``encode(src, src_pad) -> (memory (B, S', M), memory_pad (B, S') or None, decoder state)``.
    """

    def __init__(self, *, dropout: float, pad_id: int, bos_id: int, eos_id: int) -> None:
        super().__init__()
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.dropout = nn.Dropout(dropout)

    def build_decoder(self, memory_dim: int, hidden_dim: int, num_layers: int, *, num_heads: int, dropout: float,
                      tie_weights: bool) -> None:
        """The bridge from the encoder's final state, the attentional LSTM over ``self.tgt_embed``
        attending to the encoder's outputs (both of width ``memory_dim``), and the head."""
        self.bridge = Bridge(memory_dim, hidden_dim, num_layers)
        self.decoder = AttentionDecoder(self.tgt_embed.embedding_dim, hidden_dim, num_layers, memory_dim,
                                        num_heads=num_heads, dropout=dropout)
        self.head = TiedHead(hidden_dim, self.tgt_embed.num_embeddings, self.tgt_embed if tie_weights else None)

    @abstractmethod
    def encode(self, src: Tensor, src_pad: Tensor | None) -> tuple[Tensor, Tensor | None, LSTMState]:
        """src, its padding -> (memory (B, S', H), memory padding or None, the encoder's final state)."""

    def forward(self, src: Tensor, src_pad: Tensor | None, tgt_in: Tensor) -> Tensor:
        """(src, src_pad (B, S) True at padding, tgt_in (B, T) with BOS first) -> logits (B, T, V),
        teacher-forced."""
        memory, memory_pad, state = self.encode(src, src_pad)
        h, _ = self.decoder(self.dropout(self.tgt_embed(tgt_in)), state, memory, memory_pad)
        return self.head(self.dropout(h))

    # incremental decoding: see zoo.core.decoding
    def init_state(self, src: Tensor, src_pad: Tensor | None) -> dict[str, Any]:
        memory, memory_pad, hidden = self.encode(src, src_pad)
        return {"memory": memory, "memory_pad": memory_pad, "hidden": hidden, "cross": KVCache()}

    def decode_step(self, state: dict[str, Any], tokens: Tensor) -> Tensor:
        x = self.dropout(self.tgt_embed(tokens[:, None]))  # (B, 1, E)
        h, state["hidden"] = self.decoder(x, state["hidden"], state["memory"], state["memory_pad"], state["cross"])
        return self.head(self.dropout(h))[:, 0]

    def reorder_state(self, state: dict[str, Any], index: Tensor) -> None:
        state["memory"] = state["memory"].index_select(0, index)
        if state["memory_pad"] is not None:
            state["memory_pad"] = state["memory_pad"].index_select(0, index)
        state["hidden"] = tuple(s.index_select(1, index) for s in state["hidden"])
        state["cross"].reorder(index)


class RNNSeq2Seq(AttentionalEncoderDecoder):
    """The contract of ``EncoderDecoderTransformer``: forward(src, src_pad, tgt_in) -> logits,
    ``init_state`` / ``decode_step`` / ``reorder_state`` for ``zoo.core.decoding``, ``generate``."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, hidden_dim: int = 512, enc_layers: int = 2,
                 dec_layers: int = 2, num_heads: int = 1, embed_dim: int | None = None, dropout: float = 0.2,
                 share_embeddings: bool = False, tie_weights: bool = True, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2) -> None:
        super().__init__(dropout=dropout, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim {hidden_dim} must be even: each encoder direction has half of it")
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings needs one vocabulary for source and target")
        embed_dim = embed_dim or hidden_dim
        self.src_embed = nn.Embedding(src_vocab_size, embed_dim)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(tgt_vocab_size, embed_dim)
        self.encoder = RNNEncoder(embed_dim, hidden_dim // 2, enc_layers, dropout=dropout)
        self.build_decoder(self.encoder.output_dim, hidden_dim, dec_layers, num_heads=num_heads, dropout=dropout,
                           tie_weights=tie_weights)
        nn.init.uniform_(self.src_embed.weight, -0.1, 0.1)
        if not share_embeddings:
            nn.init.uniform_(self.tgt_embed.weight, -0.1, 0.1)

    def encode(self, src: Tensor, src_pad: Tensor | None = None) -> tuple[Tensor, Tensor | None, LSTMState]:
        """src (B, S), src_pad (B, S) True at (right) padding -> memory (B, S, H), src_pad, decoder state.
        A host ``src_pad`` gives the encoder host lengths to pack by; its copy goes to the device."""
        lengths = None if src_pad is None else (~src_pad).sum(1)
        memory, final = self.encoder(self.dropout(self.src_embed(src)), lengths)
        src_pad = None if src_pad is None else src_pad.to(memory.device, non_blocking=True)
        return memory, src_pad, self.bridge(final)


# Sizes. Each matches the encoder-decoder Transformer of the same size within 10% in parameters for
# small vocabularies (tests/test_rnn_baselines.py checks V = 16 and 64); dropout is the Transformer
# preset's. One embedding is shared by source, target and head, as in the Transformer presets.
# base has Luong et al.'s depth (4 layers).
SEQ2SEQ_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=172, enc_layers=1, dec_layers=1, num_heads=1, embed_dim=None, dropout=0.0,
                 share_embeddings=True, tie_weights=True),
    "small": dict(hidden_dim=384, enc_layers=2, dec_layers=2, num_heads=1, embed_dim=None, dropout=0.1,
                  share_embeddings=True, tie_weights=True),
    "base": dict(hidden_dim=800, enc_layers=4, dec_layers=4, num_heads=1, embed_dim=None, dropout=0.1,
                 share_embeddings=True, tie_weights=True),
}


@register_model("lstm_seq2seq", family="baseline", kinds=("seq2seq",), lr=2e-3, weight_decay=0.0,
                presets=SEQ2SEQ_PRESETS, width="hidden_dim", width_multiple=(2, "num_heads"),
                width_scales=("embed_dim",), extra_flops=lstm_flops, bounds={"dropout": DROPOUT})
def lstm_seq2seq(spec: dict[str, Any], **cfg: Any) -> RNNSeq2Seq:
    """LSTM encoder-decoder with global attention (Luong et al. 2015), bidirectional encoder."""
    if cfg["share_embeddings"] and spec["src_vocab_size"] != spec["tgt_vocab_size"]:
        cfg["share_embeddings"] = False
    return RNNSeq2Seq(spec["src_vocab_size"], spec["tgt_vocab_size"], pad_id=spec["pad_id"], bos_id=spec["bos_id"],
                      eos_id=spec["eos_id"], **cfg)


# ------------------------------------------------------------------- Listen, Attend and Spell (speech)

class ListenAttendSpell(AttentionalEncoderDecoder):
    """The transcription contract with ``decoding = "attention"`` (tasks/base.py):
    forward(feats (B, T, F), feat_pad (B, T) True at padding, tgt_in (B, L) BOS first) -> logits
    (B, L, V); ``generate(feats, feat_pad, max_len, beam_size)`` from ``zoo.core.decoding``."""

    decoding = "attention"

    def __init__(self, input_dim: int, vocab_size: int, *, hidden_dim: int = 256,
                 reductions: tuple[int, ...] = (1, 2, 2, 2), dec_layers: int = 1, num_heads: int = 1,
                 embed_dim: int | None = None, dropout: float = 0.1, tie_weights: bool = True, pad_id: int = 0,
                 bos_id: int = 1, eos_id: int = 2) -> None:
        super().__init__(dropout=dropout, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        self.listener = PyramidalListener(input_dim, hidden_dim, reductions, dropout=dropout)
        self.tgt_embed = nn.Embedding(vocab_size, embed_dim or hidden_dim)
        self.build_decoder(self.listener.output_dim, hidden_dim, dec_layers, num_heads=num_heads, dropout=dropout,
                           tie_weights=tie_weights)
        nn.init.uniform_(self.tgt_embed.weight, -0.1, 0.1)

    def encode(self, feats: Tensor, feat_pad: Tensor | None = None) -> tuple[Tensor, Tensor | None, LSTMState]:
        """feats (B, T, F), feat_pad (B, T) -> memory (B, T', H), its padding (B, T'), speller state.
        A host ``feat_pad`` gives the listener host lengths to pack by; the memory's padding goes to
        the device."""
        lengths = None if feat_pad is None else (~feat_pad).sum(1)
        memory, out_lengths, final = self.listener(feats, lengths)
        memory_pad = None
        if feat_pad is not None:
            memory_pad = lengths_to_padding_mask(out_lengths, memory.shape[1]).to(memory.device, non_blocking=True)
        return memory, memory_pad, self.bridge(final)


# Sizes: the listener of the paper (a BiLSTM and three pyramid layers, x8 fewer frames than the
# features, where the Conformer's front end has x4), the speller one LSTM layer at tiny and two (the
# paper's) above, all as wide as the listener's output (the paper: 2 x 256 and 512); each matches the
# Conformer (CTC) of the same size within 10% in parameters (tests/test_speech_models.py); dropout
# is the Conformer preset's.
LAS_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_dim=128, reductions=(1, 2, 2, 2), dec_layers=1, num_heads=1, embed_dim=None, dropout=0.1,
                 tie_weights=True),
    "small": dict(hidden_dim=272, reductions=(1, 2, 2, 2), dec_layers=2, num_heads=1, embed_dim=None, dropout=0.1,
                  tie_weights=True),
    "base": dict(hidden_dim=384, reductions=(1, 2, 2, 2), dec_layers=2, num_heads=1, embed_dim=None, dropout=0.1,
                 tie_weights=True),
}


@register_model("las", family="baseline", kinds=("transcription",), modalities=("audio",), lr=2e-3,
                weight_decay=0.0, presets=LAS_PRESETS, width="hidden_dim", width_multiple=(2, "num_heads"),
                width_scales=("embed_dim",), extra_flops=lstm_flops, bounds={"dropout": DROPOUT})
def las(spec: dict[str, Any], **cfg: Any) -> ListenAttendSpell:
    """Listen, Attend and Spell (Chan et al. 2016): pyramidal BiLSTM listener, attentional LSTM speller."""
    return ListenAttendSpell(spec["input_dim"], spec["vocab_size"], pad_id=spec["pad_id"], bos_id=spec["bos_id"],
                             eos_id=spec["eos_id"], **cfg)
