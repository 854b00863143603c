import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.conformer import Conv2dSubsampling, ConformerEncoder
from zoo.core import attention_backend
from zoo.core.position import RelativePositionalEncoding, relative_sinusoidal_table

torchaudio = pytest.importorskip("torchaudio")


def _randomise_norm_stats(model):
    """Non-trivial BatchNorm running statistics, so eval-mode parity checks them too."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("position", ["absolute", "none"])
@pytest.mark.parametrize("convolution_first", [False, True])
def test_parity_with_torchaudio(position, convolution_first):
    torch.manual_seed(0)
    ta = torchaudio.models.Conformer(input_dim=16, num_heads=4, ffn_dim=32, num_layers=2,
                                     depthwise_conv_kernel_size=5, dropout=0.1,
                                     convolution_first=convolution_first)
    _randomise_norm_stats(ta)
    ta.eval()
    ours = ConformerEncoder.from_torchaudio(ta, position=position).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ta.parameters())
    x = torch.randn(3, 11, 16)
    lengths = torch.tensor([11, 7, 4])
    with torch.no_grad():
        expected, ta_len = ta(x, lengths)
        for backend in ("sdpa", "math"):
            with attention_backend(backend):
                got, our_len = ours(x, lengths)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(our_len, ta_len)


def _relative_encoder(**kw):
    cfg = dict(d_model=16, num_heads=2, ffn_dim=32, num_layers=2, kernel_size=5, dropout=0.0,
               position="relative")
    input_dim = kw.pop("input_dim", 16)
    cfg.update(kw)
    return ConformerEncoder(input_dim, **cfg)


def test_relative_backends_agree_outputs_and_gradients():
    torch.manual_seed(1)
    model = _relative_encoder(subsampling=None).eval()
    with torch.no_grad():  # non-zero u, v and the rest already random
        for block in model.blocks:
            block.rel_pos.pos_bias_u.normal_()
            block.rel_pos.pos_bias_v.normal_()
    x = torch.randn(2, 9, 16)
    lengths = torch.tensor([9, 6])
    results = {}
    for backend in ("sdpa", "math"):
        model.zero_grad()
        xi = x.clone().requires_grad_()
        with attention_backend(backend):
            out, _ = model(xi, lengths)
        real = ~zoo.conformer.lengths_to_padding_mask(lengths, out.shape[1])
        (out * real[..., None]).pow(2).sum().backward()
        results[backend] = (out.detach(), xi.grad, {n: p.grad.clone() for n, p in model.named_parameters()})
    (o1, g1, p1), (o2, g2, p2) = results["sdpa"], results["math"]
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)
    assert p1.keys() == p2.keys()
    for name in p1:
        torch.testing.assert_close(p1[name], p2[name], atol=1e-5, rtol=1e-4, msg=name)
    assert p1["blocks.0.rel_pos.pos_bias_u"].abs().sum() > 0  # the relative terms are in the graph
    assert p1["blocks.0.rel_pos.linear_pos.weight"].abs().sum() > 0


def test_relative_padding_invariance():
    torch.manual_seed(2)
    model = _relative_encoder(input_dim=12, subsampling="conv2d").eval()
    _randomise_norm_stats(model)
    lengths = torch.tensor([31, 19])
    x = torch.randn(2, 31, 12)
    x_long = torch.cat([x, 5 * torch.randn(2, 14, 12)], dim=1)  # garbage in the extra padding
    x_long[1, 19:] = 5 * torch.randn(26, 12)  # and in row 1's own padding
    with torch.no_grad():
        out, out_len = model(x, lengths)
        out_long, out_len_long = model(x_long, lengths)
        alone, _ = model(x[1:, :19], lengths[1:])  # row 1 with no padding at all
    assert torch.equal(out_len, out_len_long)
    for b, n in enumerate(out_len.tolist()):
        torch.testing.assert_close(out_long[b, :n], out[b, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, : out_len[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_relative_bias_depends_only_on_distance():
    torch.manual_seed(3)
    rel = RelativePositionalEncoding(16, 2)
    B, H, T, Dh = 2, 2, 7, 8
    # With the same query at every position and no key content, the bias is a function of i - j.
    q = torch.randn(B, H, 1, Dh).expand(B, H, T, Dh)
    bias = rel(q, torch.zeros(B, H, T, Dh))
    assert bias.shape == (B, H, T, T)
    for i in range(T - 1):
        for j in range(T - 1):
            torch.testing.assert_close(bias[..., i + 1, j + 1], bias[..., i, j])
    assert not torch.allclose(bias[..., 0, 1], bias[..., 1, 0])  # and it is not symmetric in i - j
    # In general: bias[i, j] = ((q_i + v) . p_{i-j} + u . k_j) / sqrt(Dh), with p_d = W_R sinusoid(d).
    q, k = torch.randn(B, H, T, Dh), torch.randn(B, H, 5, Dh)
    bias = rel(q, k)
    table = relative_sinusoidal_table(T, 16)  # row r: distance T - 1 - r
    for i in range(T):
        for j in range(5):
            p = rel.linear_pos(table[T - 1 - (i - j)]).view(H, Dh)
            want = (((q[:, :, i] + rel.pos_bias_v) * p).sum(-1) + (rel.pos_bias_u * k[:, :, j]).sum(-1))
            torch.testing.assert_close(bias[:, :, i, j], want / math.sqrt(Dh))
    # Distance 0 is the sinusoid of position 0: (0, 1, 0, 1, ...).
    assert torch.equal(table[T - 1], torch.tensor([0.0, 1.0] * 8))


def test_subsampling_lengths_match_convolutions():
    torch.manual_seed(4)
    front = Conv2dSubsampling(10, 8, channels=4)
    for n in range(7, 40):
        out, out_len = front(torch.randn(1, n, 10), torch.tensor([n]))
        assert out.shape == (1, out_len.item(), 8), n
        conv_len = n
        for _ in range(2):  # kernel 3, stride 2, no padding
            conv_len = math.floor((conv_len - 3) / 2) + 1
        assert out_len.item() == conv_len
    out, out_len = front(torch.randn(3, 25, 10), torch.tensor([25, 12, 7]))
    assert out.shape[1] == out_len.max() and out_len.tolist() == [5, 2, 1]


def test_registered_factories_forward():
    assert "conformer" in zoo.list_models(kind="transcription")
    assert "conformer" in zoo.list_models(kind="classification", modality="audio")
    assert "conformer" not in zoo.list_models(kind="classification", modality="image")  # not run on images
    torch.manual_seed(5)
    clf = zoo.create_model("conformer", {"kind": "classification", "modality": "audio", "input_shape": (24, 10),
                                         "num_classes": 5}, size="tiny", num_layers=1, d_model=32, ffn_dim=64)
    logits = clf(torch.randn(2, 24, 10))
    assert logits.shape == (2, 5)
    logits_len = clf(torch.randn(2, 24, 10), torch.tensor([24, 13]))
    assert logits_len.shape == (2, 5) and torch.isfinite(logits_len).all()

    asr = zoo.create_model("conformer", {"kind": "transcription", "input_dim": 10, "vocab_size": 7},
                           size="tiny", num_layers=1, d_model=32, ffn_dim=64)
    x, lengths = torch.randn(2, 30, 10), torch.tensor([30, 21])
    log_probs, out_len = asr(x, lengths)
    assert log_probs.shape == (2, 6, 7) and out_len.tolist() == [6, 4]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 6))
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_len, torch.tensor([3, 2]), blank=0)
    loss.backward()
    assert torch.isfinite(loss)
    for size in ("small", "base"):
        zoo.create_model("conformer", {"kind": "transcription", "input_dim": 10, "vocab_size": 7}, size=size)


def test_every_transformer_preset_has_a_head_size_that_is_a_multiple_of_8():
    """bf16 SDPA on a GPU runs its flash and memory-efficient kernels only for such head sizes."""
    from zoo.registry import get_model_entry
    for name in ("conformer", "vit", "gpt", "transformer", "decision_transformer"):
        entry = get_model_entry(name)
        for size, preset in entry.presets.items():
            width = next(preset[k] for k in ("d_model", "dim", "hidden_dim", "n_embd", "embed_dim") if k in preset)
            heads = next(preset[k] for k in ("num_heads", "heads", "n_head") if k in preset)
            assert width % heads == 0 and (width // heads) % 8 == 0, (name, size, width, heads)


def test_position_tables_are_made_once_per_length_and_device():
    from zoo.core.position import cached_table, relative_sinusoidal_table, sinusoidal_table
    first = cached_table("relative", 7, 16, torch.device("cpu"), torch.float32)
    assert cached_table("relative", 7, 16, torch.device("cpu"), torch.float32) is first
    torch.testing.assert_close(first, relative_sinusoidal_table(7, 16), rtol=0, atol=0)
    torch.testing.assert_close(cached_table("absolute", 5, 16, torch.device("cpu"), torch.float32),
                               sinusoidal_table(5, 16), rtol=0, atol=0)
