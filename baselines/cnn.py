"""Convolutional baselines.

``resnet``: the CIFAR-style residual network of He et al. 2016 (section 4.2): a 3x3 stem, three
stages of basic blocks at widths (w, 2w, 4w) with stride 2 between stages, global average pooling
and a linear head. Images larger than 32 pixels get a stride-2 stem and a max-pool first, as
ImageNet ResNets do, so that the cost stays in proportion.

``kws_resnet``: the keyword-spotting residual networks of Tang & Lin 2018 ("Deep Residual Learning
for Small-Footprint Keyword Spotting"), res8 at tiny: the log-mel spectrogram (B, T, F) as a
one-channel image, a 3x3 convolution, a 4x3 average pool (time x frequency) right after it, residual
blocks, global average pooling and a linear layer. Tang & Lin keep one width (45) and the pooled
resolution throughout; here the blocks follow the He et al. layout of ``resnet`` (widths w, 2w, 4w,
stride 2 between stages). At the pooled resolution a constant width grows the compute with the
parameters: matching the tiny Conformer's 0.85M parameters at one width takes 125 channels and 7x
its FLOPs per clip (558 vs 79 MFLOP); the stages put most parameters where there are few positions
and match them at 1.3x (101 MFLOP). Depth per size: res8 (one block per stage), res15 (Tang & Lin's
six blocks) and res26 (twelve). Tang & Lin's BatchNorm has no affine parameters and res15/res26
dilate their convolutions instead of striding; ours are ``resnet``'s blocks as they are.
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


class SpectrogramResNet(ResNet):
    """forward(x (B, T, F)) -> logits (B, C): the features as a one-channel image (B, 1, T, F)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.unsqueeze(1))


# Widths chosen so that each size matches the Conformer (classification, 40 mels, 35 classes) of the
# same size within 10% in parameters (tests/test_speech_models.py checks it); dropout 0 as ``resnet``.
KWS_RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=53, blocks=1, stem_pool=(4, 3), dropout=0.0),  # res8: 1 + 2 * 3 convolutions + linear
    "small": dict(width=80, blocks=2, stem_pool=(4, 3), dropout=0.0),  # res15 depth (Tang & Lin: 6 blocks)
    "base": dict(width=76, blocks=4, stem_pool=(4, 3), dropout=0.0),  # res26 depth (12 blocks)
}


@register_model("kws_resnet", family="baseline", kinds=("classification",), modalities=("audio",), lr=2e-3,
                weight_decay=5e-4, presets=KWS_RESNET_PRESETS, width="width",
                bounds={"dropout": DROPOUT, "stem_pool": Range(1, length=2)})
def kws_resnet(spec: dict[str, Any], **cfg: Any) -> SpectrogramResNet:
    """Keyword-spotting ResNet (Tang & Lin 2018, res8/res15/res26 depths) on the spectrogram as an image."""
    return SpectrogramResNet(1, spec["num_classes"], **cfg)
