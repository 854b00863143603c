"""Conformer encoder (Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for Speech
Recognition"), as in ESPnet / WeNet.

features (B, T, F) -> [front end: two stride-2 Conv2d + ReLU (x4 in time) -> Linear to d_model]
-> Conformer blocks -> (B, T', d_model), with the lengths updated. Each block (Macaron style):

    x = x + 1/2 FFN(LN(x))        (FFN: Linear -> SiLU -> dropout -> Linear -> dropout)
    x = x + dropout(MHSA(LN(x)))
    x = x + Conv(x)               (Conv: LN -> pointwise Conv1d to 2C -> GLU -> [zero padded frames]
                                   -> depthwise Conv1d (odd kernel) -> BatchNorm1d -> SiLU
                                   -> pointwise Conv1d -> dropout)
    x = x + 1/2 FFN(LN(x))
    x = LN(x)

Position modes (``position=``):

``"relative"``
    Transformer-XL relative self-attention (ESPnet ``rel_selfattn``): scores
    ((q + u) k^T + (q + v) p_{i-j}^T) / sqrt(d). The attention itself is the shared core's
    :class:`~zoo.core.MultiHeadAttention`; the relative terms are handed to it as its additive
    ``bias`` by :class:`~zoo.core.position.RelativePositionalEncoding`, a function of the core's own
    projected q and k (see there: the core scales q k^T by 1/sqrt(d), the bias is scaled the same
    way, the u-term is folded into the same bias).
    Unlike WeNet (which drops ``rel_shift`` and attends with positions for all (i, j) pairs of a
    (2T-1) table), the (2T-1) table is indexed properly: key j of query i gets distance i - j.
``"absolute"``
    No positional term inside the blocks; the front end (if any) scales by sqrt(d_model) and adds
    the fixed sinusoids after its Linear (ESPnet ``abs_pos``; ``"relative"`` scales too). Without a front end the blocks are exactly ``torchaudio.models.Conformer``
    (same layer order and parameter layout; :meth:`ConformerEncoder.from_torchaudio`).
``"none"``
    No position information at all (``torchaudio.models.Conformer``).

``mixer="ssm"`` puts the bidirectional selective SSM in the blocks' mixer slot in place of the
self-attention (with ``position="none"``: the SSM is ordered by itself, and takes no score bias),
keeping the Macaron FFNs and the convolution module: ConMamba (Jiang et al. 2024). Padded frames do
not enter its state (``zoo.core.ssm``).

Note on padding: ``torchaudio`` does not zero padded frames before the depthwise convolution, so
its real frames next to the padding see the padded frames. Ours does by default
(``mask_conv_padding=True``, as ESPnet / WeNet); :meth:`from_torchaudio` turns it off for exact
parity.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import MIXERS, lengths_to_padding_mask, token_mixer
from .core.position import RelativePositionalEncoding, cached_table
from .options import DROPOUT, Range
from .reference import Reference
from .registry import Bench, Recipe, Rules, Sizes, register_model, register_variant

POSITIONS = ("relative", "absolute", "none")
SUBSAMPLINGS = ("conv2d", "linear", None)  # the front ends (None: none, the input is d_model wide)


class Conv2dSubsampling(nn.Module):
    """ESPnet ``Conv2dSubsampling4``: (B, T, F) -> Conv2d(1, C, 3, stride 2) -> ReLU ->
    Conv2d(C, C, 3, stride 2) -> ReLU -> Linear(C * F'', d_model) -> (B, T'', d_model),
    with T'' = ((T - 1) // 2 - 1) // 2 (no padding). Output frame t only sees input frames
    4t .. 4t + 6, so a real output frame never sees padding."""

    def __init__(self, input_dim: int, d_model: int, channels: int | None = None) -> None:
        super().__init__()
        channels = channels or d_model
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, 2), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, 2), nn.ReLU())
        freq = self.output_length(torch.tensor(input_dim)).item()
        if freq < 1:
            raise ValueError(f"input_dim {input_dim} is too small for the x4 subsampling (needs >= 7)")
        self.out = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_length(lengths: Tensor) -> Tensor:
        """The lengths after the two (kernel 3, stride 2, no padding) convolutions."""
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, C, T'', F'')
        B, C, T, Fr = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * Fr))
        return x, self.output_length(lengths).clamp(min=0)


class LinearFrontEnd(nn.Module):
    """No subsampling: Linear(input_dim, d_model) per frame (short inputs, e.g. image rows)."""

    def __init__(self, input_dim: int, d_model: int) -> None:
        super().__init__()
        self.out = nn.Linear(input_dim, d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.out(x), lengths


class ConformerFeedForward(nn.Module):
    """LN -> Linear -> SiLU -> dropout -> Linear -> dropout (torchaudio ``_FeedForwardModule``)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.dropout(F.silu(self.fc1(self.norm(x))))))


class ConformerConvModule(nn.Module):
    """LN -> pointwise Conv1d (C -> 2C) -> GLU -> zero padded frames -> depthwise Conv1d ->
    BatchNorm1d (or GroupNorm(1)) -> SiLU -> pointwise Conv1d -> dropout (torchaudio
    ``_ConvolutionModule`` with bias=True, plus the padding mask)."""

    def __init__(self, dim: int, kernel_size: int, dropout: float = 0.0, use_group_norm: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"depthwise kernel size must be odd for 'same' padding, got {kernel_size}")
        self.norm = nn.LayerNorm(dim)
        self.pointwise1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.conv_norm = nn.GroupNorm(1, dim) if use_group_norm else nn.BatchNorm1d(dim)
        self.pointwise2 = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:  # (B, T, C)
        x = F.glu(self.pointwise1(self.norm(x).transpose(1, 2)), dim=1)  # (B, C, T)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[:, None, :], 0.0)
        x = self.pointwise2(F.silu(self.conv_norm(self.depthwise(x))))
        return self.dropout(x).transpose(1, 2)


class ConformerBlock(nn.Module):
    """One Conformer block; ``position='relative'`` adds Transformer-XL relative attention terms."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, kernel_size: int, *, dropout: float = 0.0,
                 position: str = "relative", use_group_norm: bool = False, convolution_first: bool = False,
                 mask_conv_padding: bool = True, mixer: str = "attention") -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"unknown position mode {position!r}; accepted: {', '.join(POSITIONS)}")
        if mixer == "ssm" and position == "relative":
            raise ValueError("the SSM mixer takes no relative-position bias: use position 'none' or 'absolute'")
        self.ffn1 = ConformerFeedForward(dim, ffn_dim, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = token_mixer(mixer, dim, num_heads, dropout=dropout, bidirectional=True)
        self.rel_pos = RelativePositionalEncoding(dim, num_heads) if position == "relative" else None
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConformerConvModule(dim, kernel_size, dropout, use_group_norm)
        self.ffn2 = ConformerFeedForward(dim, ffn_dim, dropout)
        self.final_norm = nn.LayerNorm(dim)
        self.convolution_first = convolution_first
        self.mask_conv_padding = mask_conv_padding

    def _conv(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        return x + self.conv(x, padding_mask if self.mask_conv_padding else None)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        x = x + 0.5 * self.ffn1(x)
        if self.convolution_first:
            x = self._conv(x, padding_mask)
        h = self.attn_norm(x)
        x = x + self.attn_dropout(self.attn(h, key_padding_mask=padding_mask, bias=self.rel_pos))  # rel_pos(q, k)
        if not self.convolution_first:
            x = self._conv(x, padding_mask)
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class ConformerEncoder(nn.Module):
    """Front end (optional) + Conformer blocks. ``forward(x (B, T, input_dim), lengths (B,) or None)``
    -> (B, T', d_model), lengths (B,). ``subsampling=None``: no front end, input_dim must be d_model."""

    def __init__(self, input_dim: int, d_model: int = 144, num_heads: int = 4, ffn_dim: int = 576,
                 num_layers: int = 4, kernel_size: int = 15, *, dropout: float = 0.1,
                 position: str = "relative", subsampling: str | None = "conv2d",
                 subsampling_channels: int | None = None, use_group_norm: bool = False,
                 convolution_first: bool = False, mask_conv_padding: bool = True, mixer: str = "attention") -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"unknown position mode {position!r}; accepted: {', '.join(POSITIONS)}")
        self.input_dim, self.d_model, self.position = input_dim, d_model, position
        if subsampling is None:
            if input_dim != d_model:
                raise ValueError(f"without a front end input_dim ({input_dim}) must equal d_model ({d_model})")
            self.frontend = None
        elif subsampling == "conv2d":
            self.frontend = Conv2dSubsampling(input_dim, d_model, subsampling_channels)
        elif subsampling == "linear":
            self.frontend = LinearFrontEnd(input_dim, d_model)
        else:
            raise ValueError(f"unknown subsampling {subsampling!r}; accepted: 'conv2d', 'linear', None")
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ffn_dim, kernel_size, dropout=dropout, position=position,
                           use_group_norm=use_group_norm, convolution_first=convolution_first,
                           mask_conv_padding=mask_conv_padding, mixer=mixer)
            for _ in range(num_layers))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        padded = lengths is not None  # without lengths no frame is padding: no mask, unmasked kernels
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        if self.frontend is not None:
            x, lengths = self.frontend(x, lengths)
            if self.position != "none":  # ESPnet / WeNet embeddings scale by sqrt(d) ...
                x = x * math.sqrt(self.d_model)
            if self.position == "absolute":  # ... and abs_pos adds the fixed sinusoids
                x = x + cached_table("absolute", x.shape[1], self.d_model, x.device, x.dtype)
            x = self.dropout(x)
        # lengths stay where they were given (on the host, for CTC: Task.on_host); the mask goes to x
        padding_mask = None
        if padded:
            padding_mask = lengths_to_padding_mask(lengths, x.shape[1]).to(x.device, non_blocking=True)
        for block in self.blocks:
            x = block(x, padding_mask)
        return x, lengths

    @classmethod
    def from_torchaudio(cls, ta: nn.Module, position: str = "absolute") -> "ConformerEncoder":
        """A front-end-less encoder with the configuration and weights of a
        ``torchaudio.models.Conformer`` (``position`` 'absolute' or 'none': the same computation).
        The padding mask before the depthwise conv is off, as in torchaudio."""
        if position not in ("absolute", "none"):
            raise ValueError(f"position must be 'absolute' or 'none' (torchaudio's Conformer has no relative "
                             f"positions), got {position!r}")
        layers = list(ta.conformer_layers)
        l0 = layers[0]
        dim = l0.self_attn.embed_dim
        conv_seq = l0.conv_module.sequential
        model = cls(dim, dim, l0.self_attn.num_heads, l0.ffn1.sequential[1].out_features, len(layers),
                    conv_seq[2].kernel_size[0], dropout=l0.self_attn.dropout, position=position,
                    subsampling=None, use_group_norm=isinstance(conv_seq[3], nn.GroupNorm),
                    convolution_first=l0.convolution_first, mask_conv_padding=False)
        state = {}
        for i, layer in enumerate(layers):
            p = f"blocks.{i}."
            for name in ("ffn1", "ffn2"):
                seq = getattr(layer, name).sequential
                for ours, theirs in (("norm", seq[0]), ("fc1", seq[1]), ("fc2", seq[4])):
                    state[p + f"{name}.{ours}.weight"] = theirs.weight
                    state[p + f"{name}.{ours}.bias"] = theirs.bias
            state.update({
                p + "attn_norm.weight": layer.self_attn_layer_norm.weight,
                p + "attn_norm.bias": layer.self_attn_layer_norm.bias,
                p + "attn.in_proj.weight": layer.self_attn.in_proj_weight,
                p + "attn.in_proj.bias": layer.self_attn.in_proj_bias,
                p + "attn.out_proj.weight": layer.self_attn.out_proj.weight,
                p + "attn.out_proj.bias": layer.self_attn.out_proj.bias,
                p + "final_norm.weight": layer.final_layer_norm.weight,
                p + "final_norm.bias": layer.final_layer_norm.bias,
                p + "conv.norm.weight": layer.conv_module.layer_norm.weight,
                p + "conv.norm.bias": layer.conv_module.layer_norm.bias,
            })
            seq = layer.conv_module.sequential
            for ours, theirs in (("pointwise1", seq[0]), ("depthwise", seq[2]), ("pointwise2", seq[5])):
                state[p + f"conv.{ours}.weight"] = theirs.weight
                state[p + f"conv.{ours}.bias"] = theirs.bias
            for key, value in seq[3].state_dict().items():
                state[p + f"conv.conv_norm.{key}"] = value
        model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        return model


class ConformerClassifier(nn.Module):
    """Encoder -> masked mean over real frames -> Linear. forward(x (B, T, F), lengths=None) -> (B, C)."""

    def __init__(self, encoder: ConformerEncoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.d_model, num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, lengths = self.encoder(x, lengths)
        keep = ~lengths_to_padding_mask(lengths, h.shape[1]).to(h.device, non_blocking=True)
        pooled = (h * keep[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(h.device, h.dtype, non_blocking=True)
        return self.head(pooled)


class ConformerCTC(nn.Module):
    """Encoder -> Linear to the vocabulary (``blank`` = 0 by default) -> log_softmax.
    forward(x (B, T, F), lengths=None) -> (log_probs (B, T', V), out_lengths (B,))."""

    decoding = "ctc"  # the transcription contract of tasks/base.py

    def __init__(self, encoder: ConformerEncoder, vocab_size: int, blank: int = 0) -> None:
        super().__init__()
        self.encoder, self.blank = encoder, blank
        self.head = nn.Linear(encoder.d_model, vocab_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, lengths = self.encoder(x, lengths)
        return self.head(h).log_softmax(dim=-1), lengths


# Sizes: tiny runs on a CPU in seconds; small and base are Conformer-S (d 144, 16 blocks, kernel 32 ->
# 31) scaled down / at the paper's width. One departure: 3 heads of 48 where the paper has 4 of 36.
# The parameters are the same; a head size that is a multiple of 8 lets bf16 SDPA run its flash and
# memory-efficient kernels on a GPU (36 falls back to the math kernel). tiny's 4 heads of 24 already do.
CONFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=96, num_layers=3, num_heads=4, ffn_dim=384, kernel_size=15, dropout=0.1,
                 position="relative", subsampling="conv2d", subsampling_channels=None, mixer="attention"),
    "small": dict(d_model=144, num_layers=8, num_heads=3, ffn_dim=576, kernel_size=31, dropout=0.1,
                  position="relative", subsampling="conv2d", subsampling_channels=None, mixer="attention"),
    "base": dict(d_model=144, num_layers=16, num_heads=3, ffn_dim=576, kernel_size=31, dropout=0.1,
                 position="relative", subsampling="conv2d", subsampling_channels=None, mixer="attention"),
}
# ConMamba: the bidirectional SSM in place of self-attention; narrower FFNs match the Conformer's parameters
CONMAMBA_PRESETS = {"tiny": {"ffn_dim": 320}, "small": {"ffn_dim": 480}, "base": {"ffn_dim": 480}}


def conformer_reference(device: torch.device) -> Reference:
    """The encoder blocks (4 x d144, kernel 31) vs ``torchaudio.models.Conformer``, the same weights."""
    import torchaudio

    ta = torchaudio.models.Conformer(input_dim=144, num_heads=4, ffn_dim=576, num_layers=4,
                                     depthwise_conv_kernel_size=31)
    x = torch.randn(8, 200, 144, device=device)
    lengths = torch.full((8,), 200, device=device)
    return Reference(ConformerEncoder.from_torchaudio(ta), {"torchaudio": ta}, lambda: (x, lengths),
                     lambda m, i: m(*i)[0], 8, "200x144")


@register_model("conformer", family="transformer", kinds=("classification", "transcription"), modalities=("audio",),
                sizes=Sizes(CONFORMER_PRESETS, width="d_model", multiple="num_heads",
                            scales=("ffn_dim", "subsampling_channels")),
                recipe=Recipe(lr=1e-3, weight_decay=1e-3), bench=Bench(reference=conformer_reference),
                rules=Rules(bounds={"dropout": DROPOUT, "kernel_size": Range(1, odd=True)},
                            choices={"position": POSITIONS, "subsampling": SUBSAMPLINGS, "mixer": MIXERS}))
def conformer(spec: dict[str, Any], **cfg: Any) -> nn.Module:
    """Conformer (Gulati et al. 2020): conv subsampling, Macaron FFN + relative-position MHSA + conv blocks."""
    kind = spec.get("kind", "transcription")
    if kind == "transcription":  # CTC head
        return ConformerCTC(ConformerEncoder(spec["input_dim"], **cfg), spec["vocab_size"], spec.get("blank_id", 0))
    if kind == "classification":  # keyword spotting: pooled head over audio features (T, F)
        _, input_dim = spec["input_shape"]
        return ConformerClassifier(ConformerEncoder(input_dim, **cfg), spec["num_classes"])
    raise ValueError(f"the Conformer serves classification and transcription, not {kind!r}")


register_variant("conmamba", like="conformer", family="ssm", config={"mixer": "ssm", "position": "none"},
                 presets=CONMAMBA_PRESETS,
                 description="ConMamba (Jiang et al. 2024): Conformer blocks with bidirectional Mamba for self-attention")
