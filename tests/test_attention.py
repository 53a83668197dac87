"""The cuDNN attention switch: off on CUDA by default, untouched on CPU or when the config keeps it."""

from __future__ import annotations

import pytest
import torch

from gream_lit.modeling.attention import avoid_cudnn_attention


@pytest.fixture
def cudnn_sdp_restored():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_cuda_device_turns_cudnn_attention_off(cudnn_sdp_restored):
    avoid_cudnn_attention(torch.device("cuda"))
    assert not torch.backends.cuda.cudnn_sdp_enabled()


@pytest.mark.parametrize("device, enabled", [("cpu", True), ("cuda", False)])
def test_cpu_or_disabled_option_leaves_it_on(cudnn_sdp_restored, device, enabled):
    avoid_cudnn_attention(torch.device(device), enabled)
    assert torch.backends.cuda.cudnn_sdp_enabled()
