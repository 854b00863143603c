"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), and its SSM variant.

Image -> non-overlapping patches (a strided conv) -> [class token; patches] + learned positions ->
pre-norm encoder blocks of the shared core -> LayerNorm -> linear head on the class token.
Layout, initialisation and LayerNorm eps (1e-6) follow ``torchvision.models.VisionTransformer``;
``VisionTransformer.from_torchvision`` copies a torchvision model's weights (pretrained ones too).

``mixer="ssm"`` puts the bidirectional selective SSM in the blocks' mixer slot; with ``mlp_dim=0``
(blocks of the mixer alone) it is Vim (Zhu et al. 2024, "Vision Mamba"): patches and positions as
the ViT's, bidirectional Mamba blocks, the head on the class token. Vim puts its class token in the
middle of the sequence; with a bidirectional scan every position sees every other, so it stays first
here, as the ViT's does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .core import MIXERS, EncoderBlock
from .options import DROPOUT
from .reference import Reference, call
from .registry import Bench, Recipe, Rules, Sizes, register_model, register_variant


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, num_classes: int, *, in_chans: int = 3,
                 dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 dropout: float = 0.0, attn_dropout: float = 0.0, norm_eps: float = 1e-6,
                 mixer: str = "attention") -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
        self.image_size, self.patch_size, self.dim = image_size, patch_size, dim
        num_patches = (image_size // patch_size) ** 2
        self.conv_proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, num_patches + 1, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, mlp_dim, dropout=dropout, attn_dropout=attn_dropout,
                         activation="gelu", norm_first=True, norm_eps=norm_eps, mixer=mixer, bidirectional=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        fan_in = self.conv_proj.in_channels * self.patch_size**2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        for block in (b for b in self.blocks if b.mlp is not None):
            for fc in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv_proj(x)  # (B, C, H, W) -> (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # -> (B, N, D)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N+1, D)
        x = self.dropout(x + self.pos_embedding)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.forward_features(x)[:, 0])

    @classmethod
    def from_torchvision(cls, tv: nn.Module) -> "VisionTransformer":
        """A zoo ViT with the configuration and the weights of a ``torchvision`` ViT. ValueError, before
        converting, for what ours cannot express: a pre-logits layer, a conv stem, norm layers that are
        not LayerNorms with weight and bias and one eps."""
        layers = list(tv.encoder.layers)
        problems = _torchvision_unsupported(tv, layers)
        if problems:
            raise ValueError(f"unsupported torchvision ViT: {'; '.join(problems)}")
        model = cls(tv.image_size, tv.patch_size, tv.heads.head.out_features,
                    in_chans=tv.conv_proj.in_channels, dim=tv.hidden_dim, depth=len(layers),
                    num_heads=layers[0].num_heads, mlp_dim=tv.mlp_dim, dropout=tv.dropout,
                    attn_dropout=tv.attention_dropout, norm_eps=tv.encoder.ln.eps)
        state = {
            "conv_proj.weight": tv.conv_proj.weight, "conv_proj.bias": tv.conv_proj.bias,
            "class_token": tv.class_token, "pos_embedding": tv.encoder.pos_embedding,
            "norm.weight": tv.encoder.ln.weight, "norm.bias": tv.encoder.ln.bias,
            "head.weight": tv.heads.head.weight, "head.bias": tv.heads.head.bias,
        }
        for i, layer in enumerate(layers):
            p = f"blocks.{i}."
            state.update({
                p + "res_attn.norm.weight": layer.ln_1.weight, p + "res_attn.norm.bias": layer.ln_1.bias,
                p + "attn.in_proj.weight": layer.self_attention.in_proj_weight,
                p + "attn.in_proj.bias": layer.self_attention.in_proj_bias,
                p + "attn.out_proj.weight": layer.self_attention.out_proj.weight,
                p + "attn.out_proj.bias": layer.self_attention.out_proj.bias,
                p + "res_mlp.norm.weight": layer.ln_2.weight, p + "res_mlp.norm.bias": layer.ln_2.bias,
                p + "mlp.fc1.weight": layer.mlp[0].weight, p + "mlp.fc1.bias": layer.mlp[0].bias,
                p + "mlp.fc2.weight": layer.mlp[3].weight, p + "mlp.fc2.bias": layer.mlp[3].bias,
            })
        model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        return model


def _torchvision_unsupported(tv: nn.Module, layers: list[nn.Module]) -> list[str]:
    """What of a torchvision ViT ``VisionTransformer.from_torchvision`` cannot copy, each as
    'setting (supported: ...)'."""
    problems = []
    if getattr(tv, "representation_size", None) is not None:
        problems.append(f"representation_size={tv.representation_size} (supported: None, no pre-logits layer)")
    if not isinstance(tv.conv_proj, nn.Conv2d):
        problems.append("conv_stem_configs (supported: None, the one-conv patch stem)")
    eps = getattr(tv.encoder.ln, "eps", None)
    for norm in [tv.encoder.ln] + [n for layer in layers for n in (layer.ln_1, layer.ln_2)]:
        if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None or norm.eps != eps:
            problems.append(f"norm_layer={norm!r} (supported: LayerNorm with weight and bias, one eps throughout)")
            break
    return problems


# Sizes. tiny runs on a CPU in seconds; small is ViT-Lite-6 width; base is ViT-Lite-7/4 (Compact
# Transformers), the from-scratch CIFAR ViT. `tokens` is the target patch grid side: the patch size
# is the divisor of the image size closest to image_size / tokens (8x8 digits, tiny: 2x2 patches).
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=64, depth=4, num_heads=4, mlp_dim=128, tokens=4, patch_size=None, dropout=0.1,
                 attn_dropout=0.0, mixer="attention"),
    "small": dict(dim=128, depth=6, num_heads=4, mlp_dim=256, tokens=8, patch_size=None, dropout=0.1,
                  attn_dropout=0.0, mixer="attention"),
    "base": dict(dim=256, depth=7, num_heads=4, mlp_dim=512, tokens=8, patch_size=None, dropout=0.1,
                 attn_dropout=0.0, mixer="attention"),
}
VIM_PRESETS = {"tiny": {"depth": 3, "dim": 68}, "small": {"depth": 6}, "base": {"depth": 8}}  # matched to the ViT's parameters


def auto_patch_size(image_size: int, tokens: int) -> int:
    """The divisor of ``image_size`` closest to ``image_size / tokens`` (ties: the smaller patch)."""
    divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
    return min(divisors, key=lambda p: (abs(p - image_size / tokens), p))


def vit_reference(device: torch.device) -> Reference:
    """A ViT-Tiny-width model on 32x32 images vs torchvision's (the same weights) and timm's (the same
    architecture, its own initialisation; noted in ``skipped`` when timm is not installed)."""
    import torchvision

    tv = torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=3,
                                              hidden_dim=192, mlp_dim=768, num_classes=10)
    theirs, skipped = {"torchvision": tv}, []
    try:
        import timm

        theirs["timm"] = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0, num_classes=10)
    except ImportError:
        skipped.append("vit vs timm: timm is not installed (pip install -e '.[bench]')")
    x = torch.randn(32, 3, 32, 32, device=device)
    return Reference(VisionTransformer.from_torchvision(tv), theirs, lambda: (x,), call, 32, "3x32x32", skipped)


@register_model("vit", family="transformer", kinds=("classification",), modalities=("image",),
                sizes=Sizes(VIT_PRESETS, width="dim", multiple="num_heads", scales=("mlp_dim",)),
                recipe=Recipe(lr=3e-3, weight_decay=0.05), bench=Bench(reference=vit_reference),
                rules=Rules(bounds={"dropout": DROPOUT, "attn_dropout": DROPOUT, "mlp_dim": (0, None)},
                            choices={"mixer": MIXERS}))
def vit(spec: dict[str, Any], **cfg: Any) -> VisionTransformer:
    """Vision Transformer: patch embedding, class token, learned positions, pre-norm encoder."""
    channels, height, width = spec["input_shape"]
    if height != width:
        raise ValueError(f"the ViT takes square images, got {height}x{width}")
    tokens = cfg.pop("tokens")
    patch = cfg.pop("patch_size") or auto_patch_size(height, tokens)
    return VisionTransformer(height, patch, spec["num_classes"], in_chans=channels, **cfg)


register_variant("vim", like="vit", family="ssm", config={"mixer": "ssm", "mlp_dim": 0},
                 presets=VIM_PRESETS,
                 description="Vim (Zhu et al. 2024): the ViT's patches and positions, bidirectional Mamba blocks")
