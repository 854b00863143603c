"""Convolutional baselines.

``resnet``: the CIFAR-style residual network of He et al. 2016 (section 4.2): a 3x3 stem, three
stages of basic blocks at widths (w, 2w, 4w) with stride 2 between stages, global average pooling
and a linear head. Images larger than 32 pixels get a stride-2 stem and a max-pool first, as
ImageNet ResNets do, so that the cost stays in proportion.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from zoo.registry import register_model, resolve_config


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
    def __init__(self, in_chans: int, num_classes: int, *, width: int = 16, blocks: int = 3,
                 large_input: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        stem: list[nn.Module] = [conv_bn(in_chans, width, 3, stride=2 if large_input else 1), nn.ReLU()]
        if large_input:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
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


@register_model("resnet", family="baseline", kinds=("classification",), modalities=("image",), lr=2e-3, weight_decay=5e-4)
def resnet(spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> ResNet:
    """ResNet-style CNN (He et al. 2016, CIFAR variant): basic blocks, three stages."""
    cfg = resolve_config(RESNET_PRESETS, size, overrides)
    channels, height, width = spec["input_shape"]
    return ResNet(channels, spec["num_classes"], large_input=min(height, width) > 32, **cfg)
