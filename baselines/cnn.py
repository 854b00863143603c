"""Convolutional baselines.

``resnet``: the CIFAR-style residual network of He et al. 2016 (section 4.2): a 3x3 stem, three
stages of basic blocks at widths (w, 2w, 4w) with stride 2 between stages, global average pooling
and a linear head. Images larger than 32 pixels get a stride-2 stem and a max-pool first, as
ImageNet ResNets do, so that the cost stays in proportion.

``kws_resnet``: the keyword-spotting ResNet of Tang & Lin 2018 ("Deep Residual Learning for
Small-Footprint Keyword Spotting"; castorini/honk is their code). The paper: 40 MFCCs (T, F) as a
one-channel image, a 3x3 convolution to 45 maps, then 3x3 convolutions at that one width, each
followed by ReLU and a BatchNorm without scale or shift, a residual sum (taken before the BatchNorm)
every second one; res15 has six such pairs and one more convolution, convolution i dilated by
2^(i // 3), at the full 101x40 resolution; res8 three undilated pairs after a 4x3 average pool;
then the average over time and frequency and a linear layer; SGD (momentum 0.9, lr 0.1 with step
drops, weight decay 1e-5) for 26 epochs.

Here: res15's six dilated pairs (dilations 1,1,1,2,2,2,4,4,4,8,8,8; the seventh, lone convolution
left out) at one width, 88 at tiny to match the other synth_commands models' 0.85M parameters,
after res8's 4x3 pool (550 MFLOP per clip; at the full resolution 6.8 GFLOP), as He et al.'s basic
blocks (conv-BN-ReLU-conv-BN, BatchNorm with scale and shift, the sum, ReLU, the residual branch
starting at its full scale), under the harness's AdamW recipe (lr 2e-3, weight decay 5e-4) and 4
epochs. On synth_commands (``scripts/kws_study.py``) it reaches 0.21 / 0.76 / 0.93 test top-1 with
10% / 30% / all of the training data (3 seeds). One seed each: honk's block internals reach 0.60
with 30% where these reach 0.81; without dilation the pooled average sees too little of the word
(0.05 vs 0.14 with 10%, honk's blocks). The ResNet this replaced (``resnet``'s staged blocks, widths
53/106/212; 0.04 / 0.14 / 0.80) was at chance with 10% because each residual branch's last
BatchNorm scale started at 0 (Goyal et al.): starting it at 1 gave 0.22 / 0.73 / 0.94 (one seed).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from zoo.options import DROPOUT, Range
from zoo.registry import register_model


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """x -> conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2[1].weight)  # each residual branch starts as the identity (Goyal et al.)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x).relu()) + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """forward(x (B, C, H, W)) -> logits (B, num_classes). ``stem_pool`` (kernel = stride, e.g.
    (4, 3)): an average pool right after the stem, as in Tang & Lin 2018."""

    def __init__(self, in_chans: int, num_classes: int, *, width: int = 16, blocks: int = 3,
                 large_input: bool = False, dropout: float = 0.0, stem_pool: tuple[int, int] | None = None) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        stem: list[nn.Module] = [conv_bn(in_chans, width, 3, stride=2 if large_input else 1), nn.ReLU()]
        if large_input:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        if stem_pool is not None:
            stem.append(nn.AvgPool2d(tuple(stem_pool)))
        self.stem = nn.Sequential(*stem)
        layers, c_in = [], width
        for stage, c_out in enumerate(widths):
            for i in range(blocks):
                layers.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.layers(self.stem(x))  # (B, 4w, H/4, W/4) for small inputs
        return self.head(self.dropout(self.pool(x).flatten(1)))


# Widths chosen so that each size matches the ViT of the same size within 10% in parameters on every
# vision task (tests/test_vision.py checks it). blocks=3 at width 16 would be ResNet-20.
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=22, blocks=1, dropout=0.0),  # ResNet-8 layout
    "small": dict(width=34, blocks=2, dropout=0.0),  # ResNet-14 layout
    "base": dict(width=59, blocks=3, dropout=0.0),  # ResNet-20 layout
}


@register_model("resnet", family="baseline", kinds=("classification",), modalities=("image",), lr=2e-3, weight_decay=5e-4,
                presets=RESNET_PRESETS, width="width", bounds={"dropout": DROPOUT})
def resnet(spec: dict[str, Any], **cfg: Any) -> ResNet:
    """ResNet-style CNN (He et al. 2016, CIFAR variant): basic blocks, three stages."""
    channels, height, width = spec["input_shape"]
    return ResNet(channels, spec["num_classes"], large_input=min(height, width) > 32, **cfg)


def dilated_conv_bn(width: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(width))


class DilatedBlock(nn.Module):
    """He et al.'s basic block at one width with dilated convolutions: x -> conv3x3 (dilation d1) ->
    BN -> ReLU -> conv3x3 (d2) -> BN, plus x, then ReLU. (B, w, T, F) -> (B, w, T, F)."""

    def __init__(self, width: int, d1: int, d2: int) -> None:
        super().__init__()
        self.conv1 = dilated_conv_bn(width, d1)
        self.conv2 = dilated_conv_bn(width, d2)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x).relu()) + x).relu()


class KeywordResNet(nn.Module):
    """forward(x (B, T, F)) -> logits (B, num_classes): the features as a one-channel image (B, 1, T, F),
    a 3x3 convolution to ``width`` maps (BN, ReLU), an average pool (``stem_pool``, kernel = stride;
    (1, 1): none), ``blocks`` dilated residual blocks at that width, convolution i (from 0) dilated by
    2^(i // 3) with ``dilation``, an average over time and frequency, and a linear layer."""

    def __init__(self, num_classes: int, *, width: int = 45, blocks: int = 6, stem_pool: tuple[int, int] = (1, 1),
                 dilation: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AvgPool2d(tuple(stem_pool)))
        rates = [2 ** (i // 3) if dilation else 1 for i in range(2 * blocks)]
        self.blocks = nn.Sequential(*[DilatedBlock(width, rates[i], rates[i + 1]) for i in range(0, 2 * blocks, 2)])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, F) -> (B, num_classes)
        x = self.blocks(self.stem(x.unsqueeze(1)))  # (B, w, T / p_t, F / p_f)
        return self.head(self.dropout(x.mean((2, 3))))  # the average over time and frequency


# Widths chosen so that each size matches the Conformer (classification, 40 mels, 35 classes) of the
# same size within 10% in parameters (tests/test_speech_models.py checks it). All sizes keep res8's
# 4x3 pool; res26 (base) is not dilated, as in Tang & Lin (its 24 convolutions see the whole clip).
KWS_RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=88, blocks=6, stem_pool=(4, 3), dilation=True, dropout=0.0),  # res15 layout, 842k
    "small": dict(width=202, blocks=6, stem_pool=(4, 3), dilation=True, dropout=0.0),  # res15 layout, 4.42M
    "base": dict(width=198, blocks=12, stem_pool=(4, 3), dilation=False, dropout=0.0),  # res26 layout, 8.48M
}


@register_model("kws_resnet", family="baseline", kinds=("classification",), modalities=("audio",), lr=2e-3,
                weight_decay=5e-4, presets=KWS_RESNET_PRESETS, width="width",
                bounds={"dropout": DROPOUT, "stem_pool": Range(1, length=2), "blocks": Range(1)})
def kws_resnet(spec: dict[str, Any], **cfg: Any) -> KeywordResNet:
    """Keyword-spotting ResNet (Tang & Lin 2018, res15 layout): dilated residual blocks at one width."""
    return KeywordResNet(spec["num_classes"], **cfg)
