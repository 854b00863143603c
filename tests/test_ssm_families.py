"""The mixer slot (zoo/core/layers.py): the selective SSM in place of attention gives every family its
SSM variant, the Mamba LM, Vim and ConMamba (and the Decision Mamba, tests/test_decision_transformer.py),
with the same masks and caches around it, registered with family "ssm" and matched in parameters."""

from __future__ import annotations

import pytest
import torch

import baselines  # noqa: F401
import zoo  # noqa: F401
from zoo.core import EncoderBlock, KVCache, MambaMixer, SSMCache, token_mixer
from zoo.registry import create_model, get_model_entry, list_models
from zoo.sizing import count_params

from specs import SPECS


def test_the_slot_takes_attention_or_the_ssm_and_each_makes_its_own_cache():
    assert isinstance(token_mixer("attention", 16, 4).new_cache(), KVCache)
    ssm = token_mixer("ssm", 16, 4)
    assert isinstance(ssm, MambaMixer) and isinstance(ssm.new_cache(), SSMCache)
    with pytest.raises(ValueError, match="no generation cache"):
        token_mixer("ssm", 16, 4, bidirectional=True).new_cache()
    with pytest.raises(ValueError, match="unknown token mixer 'rnn'; accepted: attention, ssm"):
        token_mixer("rnn", 16, 4)
    block = EncoderBlock(16, 4, 0, mixer="ssm")
    assert block.mlp is None and block.res_mlp is None  # a block of the mixer alone


@pytest.mark.parametrize("bidirectional, side", [(False, "left"), (True, "right"), (True, "left")])
def test_an_ssm_block_ignores_padding_as_an_attention_block_does(bidirectional, side):
    """Real positions of a padded batch get what they get alone, through the whole block."""
    torch.manual_seed(0)
    block = EncoderBlock(16, 4, 32, mixer="ssm", bidirectional=bidirectional).eval()
    x = torch.randn(1, 7, 16)
    pad = torch.randn(1, 3, 16) * 100
    padded = torch.cat([pad, x], 1) if side == "left" else torch.cat([x, pad], 1)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[:, :3] = side == "left"
    mask[:, 7:] = side == "right"
    causal = not bidirectional
    alone = block(x, causal=causal)
    out = block(padded, causal=causal, key_padding_mask=mask)
    real = out[:, 3:] if side == "left" else out[:, :7]
    torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-5)


def test_every_domain_has_an_ssm_model_matched_to_its_transformer():
    served = {spec["kind"] + "/" + str(spec["modality"]) for name in list_models(family="ssm")
              for spec in SPECS.values() if get_model_entry(name).supports(spec["kind"], spec["modality"])}
    assert {"classification/image", "language_modeling/text", "classification/audio", "transcription/audio",
            "offline_rl/state"} <= served
    for ssm, transformer, spec in (("mamba", "gpt", "chars"), ("vim", "vit", "digits"), ("conmamba", "conformer", "keywords"),
                                   ("conmamba", "conformer", "digit_strings"), ("decision_mamba", "decision_transformer", "cartpole")):
        for size in ("tiny", "small", "base"):
            a, b = count_params(ssm, SPECS[spec], size), count_params(transformer, SPECS[spec], size)
            assert abs(a - b) <= 0.10 * b, (ssm, size, a, b)


def test_the_mamba_lm_generates_beyond_its_block_size_with_its_cache():
    torch.manual_seed(0)
    spec = {"kind": "language_modeling", "modality": "text", "vocab_size": 20, "block_size": 8}
    model = create_model("mamba", spec, dim=32, depth=2).eval()
    assert model.wpe is None  # no position table: the SSM orders the tokens itself
    prompt = torch.randint(0, 20, (2, 5))
    out = model.generate(prompt, 12, temperature=0.0)  # 17 tokens > block_size 8
    assert out.shape == (2, 17)
    with torch.no_grad():  # greedy with the cache = greedy re-reading the whole sequence each step
        again = prompt
        for _ in range(12):
            again = torch.cat([again, model(again)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, again)


def test_vim_and_conmamba_are_their_families_with_the_ssm_in_the_slot():
    vim = create_model("vim", SPECS["digits"])
    assert all(isinstance(b.attn, MambaMixer) and b.attn.bidirectional and b.mlp is None for b in vim.blocks)
    assert vim(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    conmamba = create_model("conmamba", SPECS["digit_strings"]).eval()
    block = conmamba.encoder.blocks[0]
    assert isinstance(block.attn, MambaMixer) and block.rel_pos is None and block.ffn1 is not None
    x, lengths = torch.randn(2, 80, 40), torch.tensor([80, 48])
    with torch.no_grad():
        log_probs, out_lengths = conmamba(x, lengths)
        alone, _ = conmamba(x[1:, :48], torch.tensor([48]))
    torch.testing.assert_close(log_probs[1, :out_lengths[1]], alone[0, :out_lengths[1]], atol=1e-4, rtol=1e-4)
