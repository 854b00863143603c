"""The Transformer of "Attention Is All You Need" (Vaswani et al. 2017) and its decoder-only
descendant, GPT (Radford et al. 2018/2019, as in nanoGPT), on the shared core.

``EncoderDecoderTransformer``: token embeddings scaled by sqrt(d_model), sinusoidal positions,
post-norm blocks as in the paper (``norm_first=True`` for pre-norm), optional shared source/target
embeddings tied to the output projection; greedy and beam-search decoding with key/value caches.
Its encoder/decoder stacks match ``torch.nn.Transformer`` (``final_norm=True``, as torch always adds).

``GPT``: learned positions, pre-norm causal blocks with GELU (tanh approximation, GPT-2's
``gelu_new``), final LayerNorm, output head tied to the token embedding, GPT-2 initialisation
(N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)); ``generate`` with the cache.
``GPT.from_hf`` copies a Hugging Face ``GPT2LMHeadModel``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .core import MIXERS, DecoderBlock, EncoderBlock, KVCache, SinusoidalPositionalEncoding
from .core.decoding import Seq2SeqDecoder, sample_next
from .options import DROPOUT
from .reference import Reference
from .registry import Bench, Recipe, Rules, Sizes, register_model, register_variant


class EncoderDecoderTransformer(Seq2SeqDecoder, nn.Module):
    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, dim: int = 512, num_heads: int = 8,
                 enc_layers: int = 6, dec_layers: int = 6, mlp_dim: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, final_norm: bool | None = None,
                 share_embeddings: bool = False, max_len: int = 1024, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2) -> None:
        super().__init__()
        self.dim, self.pad_id, self.bos_id, self.eos_id = dim, pad_id, bos_id, eos_id
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings needs one vocabulary for source and target")
        self.src_embed = nn.Embedding(src_vocab_size, dim)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(tgt_vocab_size, dim)
        self.pos = SinusoidalPositionalEncoding(dim, max_len)
        self.dropout = nn.Dropout(dropout)
        block = dict(dropout=dropout, attn_dropout=dropout, activation=activation, norm_first=norm_first)
        self.encoder = nn.ModuleList(EncoderBlock(dim, num_heads, mlp_dim, **block) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderBlock(dim, num_heads, mlp_dim, **block) for _ in range(dec_layers))
        final_norm = norm_first if final_norm is None else final_norm  # pre-norm needs one; the paper has none
        self.enc_norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.dec_norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.head = nn.Linear(dim, tgt_vocab_size, bias=False)
        if share_embeddings:
            self.head.weight = self.tgt_embed.weight  # the paper's three-way weight sharing
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.src_embed.weight, std=dim**-0.5)
        if not share_embeddings:
            nn.init.normal_(self.tgt_embed.weight, std=dim**-0.5)

    def _embed(self, table: nn.Embedding, tokens: Tensor, offset: int = 0) -> Tensor:
        return self.dropout(self.pos(table(tokens) * math.sqrt(self.dim), offset))  # (B, T, D)

    def encode(self, src: Tensor, src_pad: Tensor | None = None) -> Tensor:
        """src (B, S) -> memory (B, S, D). src_pad: bool (B, S), True at padding."""
        x = self._embed(self.src_embed, src)
        for block in self.encoder:
            x = block(x, key_padding_mask=src_pad)
        return self.enc_norm(x)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad: Tensor | None = None) -> Tensor:
        """tgt_in (B, T) (BOS first) -> logits (B, T, V), causally."""
        x = self._embed(self.tgt_embed, tgt_in)
        for block in self.decoder:
            x = block(x, memory, memory_key_padding_mask=src_pad)
        return self.head(self.dec_norm(x))

    def forward(self, src: Tensor, src_pad: Tensor | None, tgt_in: Tensor) -> Tensor:
        src_pad = _on(src_pad, src.device)
        return self.decode(tgt_in, self.encode(src, src_pad), src_pad)

    # incremental decoding: see zoo.core.decoding
    def init_state(self, src: Tensor, src_pad: Tensor | None) -> dict[str, Any]:
        src_pad = _on(src_pad, src.device)
        return {"memory": self.encode(src, src_pad), "src_pad": src_pad, "offset": 0,
                "self": [KVCache() for _ in self.decoder], "cross": [KVCache() for _ in self.decoder]}

    def decode_step(self, state: dict[str, Any], tokens: Tensor) -> Tensor:
        x = self._embed(self.tgt_embed, tokens[:, None], state["offset"])  # (B, 1, D)
        for block, self_cache, cross_cache in zip(self.decoder, state["self"], state["cross"]):
            x = block(x, state["memory"], memory_key_padding_mask=state["src_pad"], self_cache=self_cache,
                      cross_cache=cross_cache)
        state["offset"] += 1
        return self.head(self.dec_norm(x))[:, 0]

    def reorder_state(self, state: dict[str, Any], index: Tensor) -> None:
        state["memory"] = state["memory"].index_select(0, index)
        if state["src_pad"] is not None:
            state["src_pad"] = state["src_pad"].index_select(0, index)
        for cache in state["self"] + state["cross"]:
            cache.reorder(index)


def _on(mask: Tensor | None, device: torch.device) -> Tensor | None:
    """A padding mask given on the host (``Task.on_host``), copied to ``device`` without blocking."""
    return None if mask is None else mask.to(device, non_blocking=True)


def gpt2_blocks_state(sd: dict[str, Tensor], n_layer: int, hf_prefix: str = "") -> dict[str, Tensor]:
    """Hugging Face GPT-2 block weights (``{hf_prefix}h.{i}.*``) under the names of our pre-norm
    ``EncoderBlock`` stack (``blocks.{i}.*``). HF's Conv1D stores (in, out): transposed to (out, in)."""
    state = {}
    for i in range(n_layer):
        h, p = f"{hf_prefix}h.{i}.", f"blocks.{i}."
        state.update({
            p + "res_attn.norm.weight": sd[h + "ln_1.weight"], p + "res_attn.norm.bias": sd[h + "ln_1.bias"],
            p + "attn.in_proj.weight": sd[h + "attn.c_attn.weight"].t(), p + "attn.in_proj.bias": sd[h + "attn.c_attn.bias"],
            p + "attn.out_proj.weight": sd[h + "attn.c_proj.weight"].t(), p + "attn.out_proj.bias": sd[h + "attn.c_proj.bias"],
            p + "res_mlp.norm.weight": sd[h + "ln_2.weight"], p + "res_mlp.norm.bias": sd[h + "ln_2.bias"],
            p + "mlp.fc1.weight": sd[h + "mlp.c_fc.weight"].t(), p + "mlp.fc1.bias": sd[h + "mlp.c_fc.bias"],
            p + "mlp.fc2.weight": sd[h + "mlp.c_proj.weight"].t(), p + "mlp.fc2.bias": sd[h + "mlp.c_proj.bias"],
        })
    return state


def gpt2_unsupported(config: Any, activations: tuple[str, ...]) -> list[str]:
    """What of a transformers GPT-2 ``config`` (``GPT2Config``, ``DecisionTransformerConfig``) our
    pre-norm ``EncoderBlock`` stack cannot express, each as 'setting (supported: ...)'; ``activations``
    are the ``activation_function`` names the caller maps to ours. ``n_inner`` and ``layer_norm_epsilon``
    are copied; ``reorder_and_upcast_attn`` changes float rounding only (the same function in float32)."""
    problems = []
    if config.activation_function not in activations:
        problems.append(f"activation_function={config.activation_function!r} (supported: {', '.join(activations)})")
    for key, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                           ("add_cross_attention", False)):
        value = getattr(config, key, supported)
        if bool(value) != supported:
            problems.append(f"{key}={value!r} (supported: {supported})")
    return problems


class GPT(nn.Module):
    """Decoder-only LM: token (and learned position) embeddings, pre-norm blocks of the shared core,
    final LayerNorm, a head tied to the token embedding (GPT-2 / nanoGPT). ``mixer="ssm"`` puts the
    selective SSM in the blocks' mixer slot; with ``positions=False`` and ``mlp_dim=0`` (blocks of the
    mixer alone, no position table: the SSM is ordered by itself) it is the Mamba LM (Gu & Dao 2023),
    initialised as the reference's ``MixerModel`` is, and neither its training nor its generation is
    bounded by ``block_size``."""

    def __init__(self, vocab_size: int, block_size: int, *, dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_dim: int | None = None, dropout: float = 0.0, norm_eps: float = 1e-5, bias: bool = True,
                 mixer: str = "attention", positions: bool = True) -> None:
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, dim)
        self.wpe = nn.Embedding(block_size, dim) if positions else None
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, 4 * dim if mlp_dim is None else mlp_dim, dropout=dropout,
                         attn_dropout=dropout, activation="gelu_tanh", norm_first=True, norm_eps=norm_eps, bias=bias,
                         mixer=mixer)
            for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self._init_ssm(depth) if mixer == "ssm" else self._init_gpt2(depth)

    def _init_gpt2(self, depth: int) -> None:
        """GPT-2: every Linear and Embedding N(0, 0.02), zero biases, the residual projections scaled
        by 1/sqrt(2 * n_layer)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, std=0.02 / math.sqrt(2 * depth))
            if block.mlp is not None:
                nn.init.normal_(block.mlp.fc2.weight, std=0.02 / math.sqrt(2 * depth))

    def _init_ssm(self, depth: int) -> None:
        """The Mamba reference's ``_init_weights``: embeddings N(0, 0.02), Linear weights PyTorch's, their
        biases zero (but the dt bias the mixer set, ``_no_reinit``), each residual output projection
        rescaled by 1/sqrt(n_layer) (one residual per block)."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            for block in self.blocks:
                block.attn.out_proj.weight /= math.sqrt(depth)

    def forward(self, idx: Tensor, caches: list | None = None) -> Tensor:
        """idx (B, T) -> logits (B, T, V). With ``caches`` (one per block), idx continues them."""
        offset = caches[0].length if caches else 0
        T = idx.shape[1]
        x = self.wte(idx)  # (B, T, D)
        if self.wpe is not None:
            if offset + T > self.block_size:
                raise ValueError(f"sequence of {offset + T} tokens exceeds block_size {self.block_size}")
            x = x + self.wpe(torch.arange(offset, offset + T, device=idx.device))
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=caches[i] if caches else None)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Continue idx (B, T) by ``max_new_tokens`` sampled tokens (temperature 0: greedy)."""
        was_training = self.training
        self.eval()
        try:
            return self._generate(idx, max_new_tokens, temperature, top_k, use_cache, generator)
        finally:
            self.train(was_training)

    def _generate(self, idx: Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
                  use_cache: bool, generator: torch.Generator | None) -> Tensor:
        caches, window = None, self.block_size if self.wpe is not None else None  # no positions: no window
        for _ in range(max_new_tokens):
            if use_cache and caches is not None and (window is None or caches[0].length < window):
                logits = self(idx[:, -1:], caches)
            else:  # first step, no cache, or the window is full: (re)start from the last block_size tokens
                caches = [block.attn.new_cache() for block in self.blocks] if use_cache else None
                logits = self(idx[:, -window:] if window else idx, caches)
            idx = torch.cat([idx, sample_next(logits[:, -1], temperature, top_k, generator)], dim=1)
        return idx

    @classmethod
    def from_hf(cls, hf: nn.Module) -> "GPT":
        """A zoo GPT with the configuration and weights of a transformers ``GPT2LMHeadModel``.
        ValueError, before converting, for what GPT cannot express (see ``gpt2_unsupported``; an output
        head that is not the token embedding)."""
        if not all(hasattr(hf, attr) for attr in ("config", "transformer", "lm_head")):
            raise ValueError(f"GPT.from_hf takes a GPT2LMHeadModel (a GPT-2 body and its lm_head), "
                             f"got {type(hf).__name__}")
        c = hf.config
        problems = gpt2_unsupported(c, ("gelu_new", "gelu_pytorch_tanh"))
        wte, head = hf.transformer.wte.weight, hf.lm_head.weight
        if head is not wte and not torch.equal(head, wte):
            problems.append(f"tie_word_embeddings={c.tie_word_embeddings}: its lm_head differs from the token "
                            f"embedding (supported: tied, as GPT's head is)")
        if problems:
            raise ValueError(f"unsupported GPT-2 config: {'; '.join(problems)}")
        model = cls(c.vocab_size, c.n_positions, dim=c.n_embd, depth=c.n_layer, num_heads=c.n_head,
                    mlp_dim=c.n_inner or 4 * c.n_embd, norm_eps=c.layer_norm_epsilon)
        sd = hf.transformer.state_dict()
        state = {"wte.weight": sd["wte.weight"], "wpe.weight": sd["wpe.weight"],
                 "ln_f.weight": sd["ln_f.weight"], "ln_f.bias": sd["ln_f.bias"]}
        state.update(gpt2_blocks_state(sd, c.n_layer))
        state["lm_head.weight"] = state["wte.weight"]
        model.load_state_dict({k: v.detach().clone().contiguous() for k, v in state.items()})
        return model


# ----------------------------------------------------------------------------- bench references

class _Stacks(nn.Module):
    """The encoder-decoder Transformer's stacks on embedded inputs: the work ``nn.Transformer`` does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        m = self.model
        for block in m.encoder:
            src = block(src)
        memory = m.enc_norm(src)
        for block in m.decoder:
            tgt = block(tgt, memory)
        return m.dec_norm(tgt)


def _nn_transformer_weights(ref: nn.Transformer, ours: nn.Module) -> dict[str, Tensor]:
    """nn.Transformer's weights under our parameter names (attention: packed in_proj, out_proj)."""
    state = {}

    def mha(prefix: str, m: nn.MultiheadAttention) -> None:
        state.update({f"{prefix}.in_proj.weight": m.in_proj_weight, f"{prefix}.in_proj.bias": m.in_proj_bias,
                      f"{prefix}.out_proj.weight": m.out_proj.weight, f"{prefix}.out_proj.bias": m.out_proj.bias})

    def copy(prefix: str, m: nn.Module) -> None:
        state.update({f"{prefix}.weight": m.weight, f"{prefix}.bias": m.bias})

    for i, layer in enumerate(ref.encoder.layers):
        mha(f"encoder.{i}.attn", layer.self_attn)
        copy(f"encoder.{i}.mlp.fc1", layer.linear1), copy(f"encoder.{i}.mlp.fc2", layer.linear2)
        copy(f"encoder.{i}.res_attn.norm", layer.norm1), copy(f"encoder.{i}.res_mlp.norm", layer.norm2)
    for i, layer in enumerate(ref.decoder.layers):
        mha(f"decoder.{i}.self_attn", layer.self_attn), mha(f"decoder.{i}.cross_attn", layer.multihead_attn)
        copy(f"decoder.{i}.mlp.fc1", layer.linear1), copy(f"decoder.{i}.mlp.fc2", layer.linear2)
        copy(f"decoder.{i}.res_self.norm", layer.norm1), copy(f"decoder.{i}.res_cross.norm", layer.norm2)
        copy(f"decoder.{i}.res_mlp.norm", layer.norm3)
    copy("enc_norm", ref.encoder.norm), copy("dec_norm", ref.decoder.norm)
    return {k: v.detach().clone() for k, v in state.items()}


def transformer_reference(device: torch.device) -> Reference:
    """The encoder and decoder stacks (d256, 3 + 3 layers) on embedded inputs vs ``torch.nn.Transformer``,
    the same weights."""
    ref = nn.Transformer(d_model=256, nhead=4, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=1024,
                         dropout=0.0, batch_first=True)
    ours = EncoderDecoderTransformer(8, 8, dim=256, num_heads=4, enc_layers=3, dec_layers=3, mlp_dim=1024,
                                     dropout=0.0, final_norm=True)
    result = ours.load_state_dict(_nn_transformer_weights(ref, ours), strict=False)
    assert not result.unexpected_keys and all(k.split(".")[0] in ("src_embed", "tgt_embed", "head")
                                              for k in result.missing_keys), result
    src, tgt = torch.randn(32, 32, 256, device=device), torch.randn(32, 32, 256, device=device)
    mask = nn.Transformer.generate_square_subsequent_mask(32, device=device)
    return Reference(_Stacks(ours), {"torch.nn.Transformer": ref}, lambda: (src, tgt),
                     lambda m, i: m(*i) if isinstance(m, _Stacks) else m(*i, tgt_mask=mask, tgt_is_causal=True),
                     32, "32+32x256")


def gpt_reference(device: torch.device) -> Reference:
    """A 4-layer d256 GPT vs Hugging Face's ``GPT2LMHeadModel``, the same weights (needs transformers)."""
    import transformers

    config = transformers.GPT2Config(vocab_size=256, n_positions=128, n_embd=256, n_layer=4, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                     eos_token_id=None, attn_implementation="sdpa")
    hf = transformers.GPT2LMHeadModel(config)
    idx = torch.randint(0, 256, (16, 128), device=device)
    return Reference(GPT.from_hf(hf), {"hf GPT-2": hf}, lambda: (idx,),
                     lambda m, i: m(*i) if not hasattr(m, "transformer") else m(*i).logits, 16, "128 tokens")


# Sizes. tiny fits the CPU budget of `harness run language`; base is the paper's "base" model for the
# encoder-decoder and a GPT-2-small-like width for the LM.
TRANSFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=128, num_heads=4, enc_layers=2, dec_layers=2, mlp_dim=256, dropout=0.0, norm_first=True,
                 share_embeddings=True),
    "small": dict(dim=256, num_heads=4, enc_layers=3, dec_layers=3, mlp_dim=1024, dropout=0.1, norm_first=True,
                  share_embeddings=True),
    "base": dict(dim=512, num_heads=8, enc_layers=6, dec_layers=6, mlp_dim=2048, dropout=0.1, norm_first=False,
                 share_embeddings=True),
}
GPT_PRESETS: dict[str, dict[str, Any]] = {  # mlp_dim None: 4 * dim
    "tiny": dict(dim=128, depth=4, num_heads=4, mlp_dim=None, dropout=0.0, mixer="attention", positions=True),
    "small": dict(dim=384, depth=6, num_heads=6, mlp_dim=None, dropout=0.2, mixer="attention", positions=True),
    "base": dict(dim=768, depth=12, num_heads=12, mlp_dim=None, dropout=0.1, mixer="attention", positions=True),
}
# The Mamba LM at each size: blocks of the SSM mixer alone (about half a GPT block's parameters each, so
# about twice as many, as the Mamba paper stacks them), matched in parameters to GPT's preset.
MAMBA_DEPTH = {"tiny": 7, "small": 11, "base": 23}


@register_model("transformer", family="transformer", kinds=("seq2seq",), lr=2e-3, weight_decay=0.01,
                presets=TRANSFORMER_PRESETS, width="dim", width_multiple="num_heads", width_scales=("mlp_dim",),
                reference=transformer_reference, bounds={"dropout": DROPOUT})
def transformer(spec: dict[str, Any], **cfg: Any) -> EncoderDecoderTransformer:
    """Encoder-decoder Transformer (Vaswani et al. 2017): sinusoidal positions, cached decoding."""
    if cfg["share_embeddings"] and spec["src_vocab_size"] != spec["tgt_vocab_size"]:
        cfg["share_embeddings"] = False
    return EncoderDecoderTransformer(spec["src_vocab_size"], spec["tgt_vocab_size"],
                                     max_len=max(spec["max_src_len"], spec["max_tgt_len"]) + 2,
                                     pad_id=spec["pad_id"], bos_id=spec["bos_id"], eos_id=spec["eos_id"], **cfg)


@register_model("gpt", family="transformer", kinds=("language_modeling",), modalities=("text",),
                sizes=Sizes(GPT_PRESETS, width="dim", multiple="num_heads"), recipe=Recipe(lr=2e-3, weight_decay=0.1),
                rules=Rules(bounds={"dropout": DROPOUT, "mlp_dim": (0, None)}, choices={"mixer": MIXERS}),
                bench=Bench(reference=gpt_reference))
def gpt(spec: dict[str, Any], **cfg: Any) -> GPT:
    """Decoder-only Transformer LM (GPT-2 / nanoGPT): learned positions, pre-norm, tied head."""
    return GPT(spec["vocab_size"], spec["block_size"], **cfg)


register_variant("mamba", like="gpt", family="ssm", config={"mixer": "ssm", "positions": False, "mlp_dim": 0},
                 presets={size: {"depth": depth} for size, depth in MAMBA_DEPTH.items()},
                 description="Mamba LM (Gu & Dao 2023): GPT's stack with the selective SSM alone in each block, "
                             "no position table")
