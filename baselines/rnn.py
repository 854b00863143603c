"""The recurrent parts shared by the LSTM baselines (``baselines.lstm``, ``baselines.seq2seq``).

``init_lstm_``: PyTorch's LSTM initialisation with the forget-gate bias at 1. ``TiedHead``: the output
layer tied to an embedding. ``RNNEncoder``: a (bidirectional) LSTM over packed right-padded sequences.
``PyramidalListener``: the pyramidal BiLSTM of Listen, Attend and Spell (Chan et al. 2016), the encoder
of LAS, of the BiLSTM-CTC and of the LSTM classifier; ``stack_frames`` its frame concatenation.
``lstm_flops``: the ``extra_flops`` of every model here that runs an ``nn.LSTM`` (the recurrences
``torch.utils.flop_counter.FlopCounterMode`` does not see).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from zoo.core import lengths_to_padding_mask


LSTMState = tuple[Tensor, Tensor]  # (h, c), each (num_layers, B, hidden)


def init_lstm_(lstm: nn.LSTM, forget_bias: float = 1.0) -> None:
    """PyTorch's uniform(+-1/sqrt(hidden)) weights, with the forget-gate bias at ``forget_bias``
    (Jozefowicz et al. 2015) so that memory is kept by default early in training."""
    H = lstm.hidden_size
    for name, p in lstm.named_parameters():
        if name.startswith("bias_ih"):  # gates are packed (input, forget, cell, output)
            with torch.no_grad():
                p[H:2 * H].fill_(forget_bias)
        if name.startswith("bias_hh"):
            with torch.no_grad():
                p[H:2 * H].zero_()


class TiedHead(nn.Module):
    """hidden (..., H) -> logits (..., V). With ``embedding``, its weight is the output matrix
    (a bias-free projection H -> E first if H != E); without, a plain Linear(H, V)."""

    def __init__(self, hidden_dim: int, vocab_size: int, embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        if embedding is None:
            self.proj: nn.Module = nn.Identity()
            self.out = nn.Linear(hidden_dim, vocab_size)
        else:
            E = embedding.embedding_dim
            self.proj = nn.Linear(hidden_dim, E, bias=False) if hidden_dim != E else nn.Identity()
            self.out = nn.Linear(E, vocab_size)
            self.out.weight = embedding.weight
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.proj(h))


class RNNEncoder(nn.Module):
    """A (bidirectional) multi-layer LSTM over right-padded sequences.

    forward(x (B, S, I), lengths (B,) or None) -> outputs (B, S, D) with D = directions * hidden
    (zeros at padding), and the final states (h, c), each (num_layers, B, D): per layer, the forward
    direction's state after the last real step concatenated with the backward direction's after
    the first. Packing keeps the padding out of both.
    """

    def __init__(self, input_dim: int, hidden_size: int, num_layers: int = 1, *, dropout: float = 0.0,
                 bidirectional: bool = True) -> None:
        super().__init__()
        self.num_dirs = 2 if bidirectional else 1
        self.output_dim = self.num_dirs * hidden_size
        self.lstm = nn.LSTM(input_dim, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if num_layers > 1 else 0.0)
        init_lstm_(self.lstm)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, LSTMState]:
        B = x.shape[0]
        out, (h, c) = self.lstm(x) if lengths is None else self._packed(x, lengths)

        def merge(s: Tensor) -> Tensor:  # (layers * dirs, B, Hd) -> (layers, B, dirs * Hd)
            return s.view(-1, self.num_dirs, B, s.shape[-1]).transpose(1, 2).reshape(-1, B, self.output_dim)

        return out, (merge(h), merge(c))

    def _packed(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, LSTMState]:
        """The LSTM over the rows packed longest first, as ``pack_padded_sequence(enforce_sorted=False)``
        packs them, and back in the batch's order: the same arithmetic, with the row orders made on the
        host and copied without blocking (torch's own unsorting copies them with a blocking copy and
        reads them back). cuDNN takes packed lengths on the host: host lengths (the tasks hand them so,
        ``Task.on_host``) cost no read-back; lengths on the device are read back here."""
        lengths = lengths.cpu().clamp(min=1)  # an empty row would crash packing: give it one (masked) step
        lengths, order = torch.sort(lengths, descending=True)
        undo = torch.argsort(order)  # the inverse permutation
        order, undo = order.to(x.device, non_blocking=True), undo.to(x.device, non_blocking=True)
        packed = pack_padded_sequence(x.index_select(0, order), lengths, batch_first=True)
        out, (h, c) = self.lstm(packed)  # h, c: (layers * dirs, B, Hd), rows longest first
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out.index_select(0, undo), (h.index_select(1, undo), c.index_select(1, undo))


def stack_frames(x: Tensor, lengths: Tensor | None, factor: int) -> tuple[Tensor, Tensor | None]:
    """Concatenate each ``factor`` consecutive frames: x (B, T, F) -> (B, T // factor, factor * F),
    lengths -> lengths // factor. A last incomplete group is dropped, so an output frame never mixes
    a real frame with padding. factor 2 is the step of a pyramid layer (Chan et al. 2016); on the
    features, it is the frame stacking of lower-frame-rate acoustic models (Sak et al. 2015)."""
    if factor == 1:
        return x, lengths
    B, T, Fd = x.shape
    T_out = T // factor
    x = x[:, :T_out * factor].reshape(B, T_out, factor * Fd)
    return x, None if lengths is None else lengths // factor


class PyramidalListener(nn.Module):
    """The pyramidal BiLSTM (pBLSTM) listener of Listen, Attend and Spell.

    One bidirectional :class:`RNNEncoder` layer per entry of ``reductions``; before its layer,
    each entry concatenates that many consecutive frames (:func:`stack_frames`). Chan et al. 2016:
    ``(1, 2, 2, 2)``, a BiLSTM then three pyramid layers, T -> T // 8. Dropout between layers.

    forward(x (B, T, F), lengths (B,) or None) -> (outputs (B, T', hidden_dim), zeros at padding;
    lengths (B,) after the reductions; the top layer's final states (h, c), each (1, B, hidden_dim)).
    """

    def __init__(self, input_dim: int, hidden_dim: int, reductions: tuple[int, ...] = (1, 2, 2, 2), *,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim {hidden_dim} must be even: each direction has half of it")
        if not reductions or min(reductions) < 1:
            raise ValueError(f"reductions must list one factor >= 1 per layer, got {reductions}")
        self.reductions, self.output_dim = tuple(reductions), hidden_dim
        self.reduction = math.prod(self.reductions)
        dims = [input_dim] + [hidden_dim] * (len(self.reductions) - 1)
        self.layers = nn.ModuleList(RNNEncoder(dim * r, hidden_dim // 2, 1) for dim, r in zip(dims, self.reductions))
        self.dropout = nn.Dropout(dropout)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for r in self.reductions:
            lengths = lengths // r
        return lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, LSTMState]:
        B = x.shape[0]
        for i, (layer, r) in enumerate(zip(self.layers, self.reductions)):
            x, lengths = stack_frames(self.dropout(x) if i else x, lengths, r)  # (B, T_i, r * D_i)
            x, final = layer(x, lengths)  # (B, T_i, hidden_dim)
        if lengths is None:
            return x, torch.full((B,), x.shape[1], dtype=torch.long, device=x.device), final
        # zeros at padding, also for a row left without frames (RNNEncoder gives it one junk step);
        # the lengths stay where they were given (on the host, for CTC), the mask goes to the device
        pad = lengths_to_padding_mask(lengths, x.shape[1]).to(x.device, non_blocking=True)
        return x.masked_fill(pad[..., None], 0.0), lengths, final


@contextmanager
def lstm_flops(model: nn.Module) -> Iterator[Callable[[], int]]:
    """The ``extra_flops`` of a model with ``nn.LSTM``s (``register_model(..., extra_flops=lstm_flops)``):
    forward hooks on every ``nn.LSTM`` of ``model`` add the multiply-adds of each call,
    2 * 4 gates * hidden * (input + hidden) per step, direction and layer (steps: batch x time, or the
    real steps of a PackedSequence). Yields a callable returning the forward FLOPs counted so far; the
    hooks are removed on exit."""
    tally = [0]

    def hook(module: nn.LSTM, inputs: tuple, output: Any) -> None:
        x = inputs[0]
        steps = x.data.shape[0] if isinstance(x, PackedSequence) else x.shape[0] * x.shape[1]
        dirs = 2 if module.bidirectional else 1
        H, size_in = module.hidden_size, module.input_size
        for layer in range(module.num_layers):
            tally[0] += 2 * 4 * H * (size_in + H) * steps * dirs
            size_in = H * dirs

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.LSTM)]
    try:
        yield lambda: tally[0]
    finally:
        for h in handles:
            h.remove()
