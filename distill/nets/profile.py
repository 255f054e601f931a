"""Model cost: parameters and multiply-accumulates (MACs) per second of audio."""

from __future__ import annotations

import torch
from torch import nn

# Whisper encoders by width: (layers, ffn width). Sizes from the Whisper paper (Radford et al. 2022).
_WHISPER = {384: (4, 1536), 512: (6, 2048), 768: (12, 3072), 1024: (24, 4096), 1280: (32, 5120)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def macs_per_second(model: nn.Module, seconds: float = 3.0, sample_rate: int = 16000) -> float:
    """MACs of one forward pass over ``seconds`` of audio, divided by ``seconds``.

    Counted with hooks on Conv1d (the conv frontend included), Linear and matmul-like
    einsums are not hooked, so the attention pooling's few MACs per frame are omitted.
    """
    total = 0

    def conv_hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv1d)
        k = mod.kernel_size[0] * (mod.in_channels // mod.groups)
        total += int(out.shape[0] * out.shape[1] * out.shape[2] * k)

    def linear_hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Linear)
        total += int(out.numel() * mod.in_features)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, int(seconds * sample_rate)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    frontend = getattr(model, "frontend", None)
    if frontend is not None and hasattr(frontend, "kernels"):
        # The DFT conv is a functional call, not a module: count it from its kernels, plus the mel matmul.
        frames = int(seconds * sample_rate) // frontend.cfg.hop_length + 1
        total += frames * (frontend.kernels.shape[0] * frontend.kernels.shape[2] + frontend.fbank.numel())
    return total / seconds


def whisper_encoder_cost(d_model: int, window_s: float) -> tuple[int, float]:
    """(parameters, MACs per second of audio) of a Whisper encoder of width ``d_model`` on a ``window_s`` window.

    Analytic: conv stem (80→d k3, d→d k3 stride 2), then per layer the Q/K/V/O projections,
    attention scores and mixing over the window's frames, and the FFN.
    """
    layers, ffn = _WHISPER[d_model]
    frames_in = int(window_s * 100)
    frames = frames_in // 2
    params = 80 * d_model * 3 + d_model * d_model * 3 + layers * (4 * d_model * d_model + 2 * d_model * ffn)
    macs = frames_in * 80 * d_model * 3 + frames * d_model * d_model * 3
    macs += layers * (frames * (4 * d_model * d_model + 2 * d_model * ffn) + 2 * frames * frames * d_model)
    return params, macs / window_s
