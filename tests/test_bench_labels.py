"""The bench's labels, on names rather than a GPU: which SDPA implementation ran (from the profiler's
event names), the dense bf16 peak of a GPU (from its name) and the MFU that both give.

The name lists are the aten ops and CUDA kernels that PyTorch 2.11-2.14 on CUDA shows for one attention
call (forward, or forward and backward), as in its profiler traces; the cuDNN ones contain "flash", which
is what labelled them flash before (issue 20)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.bench import attention_kernel
from harness.measure import BF16_PEAK, bf16_peak, mfu

AROUND = [  # the projections, reshapes and launches around any attention call
    "aten::linear", "aten::t", "aten::addmm", "aten::view", "aten::permute", "aten::unbind", "aten::select",
    "aten::transpose", "aten::reshape", "aten::empty", "aten::empty_like", "cudaLaunchKernel", "cudaStreamIsCapturing",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
    "aten::scaled_dot_product_attention", "cudaDeviceSynchronize",
]
FLASH_FWD = [
    "aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_forward",
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32, 128, 128, 4, false, false, cutlass::bfloat16_t, "
     "Flash_kernel_traits<32, 128, 128, 4, cutlass::bfloat16_t> >, false, false, false, false, true, true, false, false>"
     "(pytorch_flash::Flash_fwd_params)"),
]
FLASH_BWD = [
    "autograd::engine::evaluate_function: ScaledDotProductFlashAttentionBackward0",
    "ScaledDotProductFlashAttentionBackward0", "aten::_scaled_dot_product_flash_attention_backward",
    "aten::_flash_attention_backward",
    ("void pytorch_flash::flash_bwd_dot_do_o_kernel<true, Flash_bwd_kernel_traits<32, 128, 128, 8, 4, 4, 4, false, false, "
     "cutlass::bfloat16_t, Flash_kernel_traits<32, 128, 128, 8, cutlass::bfloat16_t> > >(pytorch_flash::Flash_bwd_params)"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<32, 128, 128, 8, 4, 4, 4, "
     "false, false, cutlass::bfloat16_t, Flash_kernel_traits<32, 128, 128, 8, cutlass::bfloat16_t> >, true, false, false, "
     "false, false, true, false>(pytorch_flash::Flash_bwd_params)"),
]
EFFICIENT_FWD = [
    "aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_forward",
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, "
     "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)"),
    ("fmha_cutlassF_f32_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<float, cutlass::arch::Sm80, true, "
     "64, 64, 64, true, true>::Params)"),
]
EFFICIENT_BWD = [
    "ScaledDotProductEfficientAttentionBackward0", "aten::_scaled_dot_product_efficient_attention_backward",
    "aten::_efficient_attention_backward",
    ("fmha_cutlassB_bf16_aligned_64x64_k32_sm80(PyTorchMemEffAttention::AttentionBackwardKernel<cutlass::arch::Sm80, "
     "cutlass::bfloat16_t, true, false, false, 64, 64, 32, false>::Params)"),
]
CUDNN_FWD = [
    "aten::_scaled_dot_product_cudnn_attention",
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0",
]
CUDNN_BWD = [
    "ScaledDotProductCudnnAttentionBackward0", "aten::_scaled_dot_product_cudnn_attention_backward",
    "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_16_64x128x128_4x1x1_kernel0_0",
    "sm90_flash_bprop_wgmma_f16_knob_16_64x128x128_4x1x1_kernel0_0", "cudnn::fusion::compute_dot_do_o",
]
MATH = [
    "aten::_scaled_dot_product_attention_math", "aten::mul", "aten::matmul", "aten::bmm", "aten::_safe_softmax",
    "aten::_softmax", "ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x3_nn",
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, c10::BFloat16, float, c10::BFloat16, "
     "at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(c10::BFloat16*, c10::BFloat16 const*, int)"),
]


@pytest.mark.parametrize(("names", "label"), [
    (AROUND + FLASH_FWD, "flash"), (AROUND + FLASH_FWD + FLASH_BWD, "flash"),
    (AROUND + EFFICIENT_FWD, "efficient"), (AROUND + EFFICIENT_FWD + EFFICIENT_BWD, "efficient"),
    (AROUND + CUDNN_FWD, "cudnn"), (AROUND + CUDNN_FWD + CUDNN_BWD, "cudnn"),
    (AROUND + MATH, "math"), (AROUND + MATH[1:], "math"),  # bmm and softmax without the math op: still math
])
def test_attention_kernel_names_the_implementation_that_ran(names, label):
    assert attention_kernel(names) == label
    assert attention_kernel(reversed(names)) == label  # the order of the events does not matter
    assert attention_kernel(iter(names)) == label  # any iterable, once (the profiler's events are a generator)


def test_cudnn_kernels_named_flash_are_cudnn():
    """Issue 20: cuDNN's kernels contain 'flash'; neither with the op nor on their own are they flash."""
    assert all("flash" in n for n in CUDNN_FWD[1:])
    assert attention_kernel(CUDNN_FWD) == "cudnn"
    assert attention_kernel(CUDNN_FWD[1:]) == "cudnn"  # the kernel alone (no aten op recorded)
    assert attention_kernel(["sm90_flash_fprop_wgmma_f16_knob_3_64x64x128_4x1x1_kernel0_0"]) == "cudnn"
    assert attention_kernel(["cudnn::fusion::compute_dot_do_o"]) == "cudnn"


@pytest.mark.parametrize(("kernels", "label"), [
    (FLASH_FWD[2:] + FLASH_BWD[4:], "flash"), (EFFICIENT_FWD[2:] + EFFICIENT_BWD[3:], "efficient"),
    (CUDNN_FWD[1:] + CUDNN_BWD[2:], "cudnn"), (MATH[6:], "math"), ([], "math"),
])
def test_the_kernels_decide_only_without_the_ops(kernels, label):
    assert attention_kernel(kernels) == label


def test_the_ops_outrank_the_kernels():
    """An op of one implementation beside a kernel that another's pattern would match: the op decides."""
    assert attention_kernel(["aten::_scaled_dot_product_efficient_attention", "cudnn_generated_conv_fusion_attn"]) \
        == "efficient"
    assert attention_kernel(["aten::_scaled_dot_product_flash_attention", "cudnn::ops::nchwToNhwcKernel"]) == "flash"


def test_a_cudnn_convolution_is_not_attention():
    assert attention_kernel(AROUND + ["cudnn::ops::nchwToNhwcKernel",
                                      "sm80_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc"]) == "math"


@pytest.mark.parametrize(("backend", "label"), [("math", "math"), ("flash", "flash")])
def test_attention_kernel_reads_a_live_cpu_profile(backend, label):
    """On names the profiler records here (CPU: the math op, or flash's CPU kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    q = k = v = torch.randn(1, 2, 16, 8)
    with sdpa_kernel(SDPBackend.MATH if backend == "math" else SDPBackend.FLASH_ATTENTION), \
            profile(activities=[ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert attention_kernel(e.name for e in prof.events()) == label


# ------------------------------------------------------------------------------------ peaks and MFU

@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835), ("NVIDIA GH200 480GB", 989), ("NVIDIA GH200 144G HBM3e", 989),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100-SXM4-40GB", 312), ("NVIDIA A100 80GB PCIe", 312),
    ("NVIDIA A100-PCIE-40GB", 312), ("NVIDIA B200", 2250), ("NVIDIA GB200", 2500),
    ("NVIDIA L40S", 362.05), ("NVIDIA L40", 181.05), ("NVIDIA L4", 121), ("NVIDIA A10G", 70), ("NVIDIA A10", 125),
    ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA GeForce RTX 3090", 71),
])
def test_bf16_peak_tells_the_cards_apart(name, tflops):
    assert bf16_peak(name) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", [
    "NVIDIA H100",  # neither SXM (reported "80GB HBM3") nor PCIe nor NVL: unknown, not the SXM peak
    "Tesla V100-SXM2-16GB", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 4090 Laptop GPU",
    "NVIDIA GeForce RTX 3090 Ti", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "AMD Instinct MI300X", "NVIDIA A40", "",
    "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz (16 cores)",
])
def test_bf16_peak_of_an_unknown_gpu_is_none(name):
    assert bf16_peak(name) is None


def test_every_peak_pattern_is_reachable():
    """No pattern is hidden behind an earlier, broader one: each has a name that it, and no earlier one, matches."""
    names = ["NVIDIA GH200 480GB", "NVIDIA H200 NVL", "NVIDIA H200", "NVIDIA H100 NVL", "NVIDIA H100 PCIe",
             "NVIDIA H100 80GB HBM3", "NVIDIA GB200", "NVIDIA B200", "NVIDIA A100-SXM4-80GB", "NVIDIA A10G",
             "NVIDIA A10", "NVIDIA L40S", "NVIDIA L40", "NVIDIA L4", "NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090"]
    assert [bf16_peak(n) for n in names] == [peak for _, peak in BF16_PEAK]


def test_mfu_is_counted_flops_over_the_peak():
    assert mfu(1e9, 1000.0, "NVIDIA H100 80GB HBM3") == pytest.approx(1e12 / 989e12)
    assert mfu(1e9, 1000.0, "NVIDIA H100 PCIe") == pytest.approx(1e12 / 756e12)
    assert mfu(1e9, 2000.0, "NVIDIA A100-SXM4-80GB", num_gpus=2) == pytest.approx(1e12 / 312e12)


@pytest.mark.parametrize("args, kwargs", [
    ((1e9, 1000.0, "NVIDIA GeForce RTX 4090 D"), {}),  # no known peak
    ((1e9, 1000.0, "NVIDIA H100 80GB HBM3"), {"device": "cpu"}),  # not CUDA
    ((1e9, 1000.0, "Intel(R) Xeon(R) CPU @ 2.20GHz (2 cores)"), {}),
    ((None, 1000.0, "NVIDIA H100 80GB HBM3"), {}),  # FLOPs not counted (measure_flops gave None)
    ((1e9, float("nan"), "NVIDIA H100 80GB HBM3"), {}),  # no training time
    ((1e9, None, "NVIDIA H100 80GB HBM3"), {}),
    ((1e9, 1000.0, "NVIDIA H100 80GB HBM3"), {"num_gpus": 0}),
])
def test_mfu_is_nan_when_it_cannot_be_known(args, kwargs):
    assert math.isnan(mfu(*args, **kwargs))
