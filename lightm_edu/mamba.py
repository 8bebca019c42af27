"""The Mamba block in plain PyTorch, a drop-in twin of ``mamba_ssm.Mamba``.

Chapter 4 explains it. Same constructor arguments, defaults, initialisation and ``state_dict``
names as ``mamba_ssm.Mamba`` (version 2.x), so weights load both ways without renaming; the
selective scan runs on any backend of :func:`lightm_edu.selective_scan`.

Glossary (code name -> symbol in the Mamba paper, shapes for input (b, l, d_model)):

    in_proj     the two input projections, d_model -> 2 d_inner: x branch and gate z   (b, 2 d_inner, l)
    conv1d      causal depthwise convolution of width d_conv along the sequence       (b, d_inner, l)
    x_proj      input-dependent parameters: Delta (low rank), B_t, C_t               (b*l, dt_rank + 2 n)
    dt_proj     Delta = softplus(dt_proj(dt) + bias), back to d_inner channels        (b, d_inner, l)
    A_log       A = -exp(A_log), the S4D-Real diagonal state matrix                   (d_inner, n)
    D           skip connection D                                                    (d_inner,)
    out_proj    d_inner -> d_model                                                   (b, l, d_model)

    d_inner = expand * d_model ; dt_rank = ceil(d_model / 16) ; n = d_state
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .scan import get_scan_backend, resolve_backend, selective_scan


class Mamba(nn.Module):
    """Mamba block: ``out_proj(SSM(SiLU(conv(x))) * SiLU(z))`` with ``(x, z) = in_proj(u)``.

    Args (as ``mamba_ssm.Mamba``):
        d_model: channels of the input and output.  d_state: state size n.  d_conv: width of the
        causal convolution.  expand: d_inner / d_model.  dt_rank: rank of the Delta projection
        ("auto" = ceil(d_model / 16)).  dt_min, dt_max, dt_init, dt_scale, dt_init_floor: the
        initialisation of Delta.  conv_bias, bias: biases of conv1d and of in/out_proj.
        use_fast_path: on the "mamba_ssm" backend, use its fused kernel (needs causal_conv1d).
        layer_idx, device, dtype: as in mamba_ssm.
        scan_backend: the selective-scan backend for this block (None: the global choice, see
        :func:`lightm_edu.set_scan_backend`).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank="auto", dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random",
                 dt_scale: float = 1.0, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, use_fast_path: bool = True, layer_idx=None, device=None, dtype=None,
                 scan_backend: str | None = None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_fast_path, self.layer_idx, self.scan_backend = use_fast_path, layer_idx, scan_backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        # A = -(1, ..., n) in every channel (S4D-Real), stored as its log so that A stays negative.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, n)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))  # (d_inner,)
        self.D._no_weight_decay = True
        init_dt_projection(self.dt_proj, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states (b, l, d_model) -> (b, l, d_model)."""
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects input of shape (batch, length, d_model={self.d_model}), "
                             f"got {tuple(hidden_states.shape)}.")
        b, length, _ = hidden_states.shape
        backend = resolve_backend(self.scan_backend or get_scan_backend(), hidden_states.device.type)
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2 d_inner, l)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        if backend == "mamba_ssm" and self.use_fast_path and _fused_path_available():
            return self._fused(xz, A)
        x, z = xz.chunk(2, dim=1)  # (b, d_inner, l) each
        x = F.silu(self.conv1d(x)[..., :length])  # causal: keep the first l outputs, (b, d_inner, l)
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, l, dt_rank + 2 n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (b, d_inner, l); bias goes in the scan
        B = B.transpose(1, 2).contiguous()  # (b, n, l)
        C = C.transpose(1, 2).contiguous()  # (b, n, l)
        y = selective_scan(x, dt, A, B, C, D=self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                           delta_softplus=True, backend=backend)  # (b, d_inner, l)
        return self.out_proj(y.transpose(1, 2))  # (b, l, d_model)

    def _fused(self, xz, A):
        """mamba_ssm's fused kernel: conv, projections, scan and gate in one autograd function."""
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn

        return mamba_inner_fn(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                              self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias, A, None, None,
                              self.D.float(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True)

    def forward_fused_reference(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """What ``mamba_ssm.Mamba``'s fused fast path computes, in plain PyTorch (any device, any backend).

        hidden_states (b, l, d_model) -> (b, l, d_model), equal to :meth:`forward`. Like the fused
        path, it reads the weights of ``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj`` and
        ``out_proj`` directly (``weight @ x``, :func:`torch.nn.functional.conv1d`,
        :func:`~torch.nn.functional.linear`) instead of calling those submodules. Tools that count
        by module hooks (``thop``) therefore never see them: :mod:`lightm_edu.flops` uses this to
        reproduce such undercounts without a GPU.
        """
        b, length, _ = hidden_states.shape
        # mamba_ssm multiplies by in_proj.weight itself, so the in_proj module is never called.
        xz = (self.in_proj.weight @ hidden_states.reshape(b * length, -1).t())  # (2 d_inner, b*l)
        xz = xz.reshape(-1, b, length).transpose(0, 1)  # (b, 2 d_inner, l)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.unsqueeze(-1)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        return mamba_inner_reference(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                                     self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias, A,
                                     D=self.D.float(), delta_bias=self.dt_proj.bias.float(),
                                     delta_softplus=True, backend=self.scan_backend)


def mamba_inner_reference(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                          out_proj_weight, out_proj_bias, A, D=None, delta_bias=None,
                          delta_softplus: bool = True, backend: str | None = None) -> torch.Tensor:
    """The fused Mamba computation of ``mamba_ssm``'s ``mamba_inner_fn``, as its ``mamba_inner_ref``.

    Every weight is used directly, never through a module: causal depthwise convolution, SiLU,
    ``x_proj``, the low-rank Delta projection, the selective scan with the SiLU(z) gate, ``out_proj``.

    Args:
        xz: the in_proj output, x and z stacked, (b, 2 d_inner, l).
        conv1d_weight: (d_inner, 1, d_conv).  conv1d_bias: (d_inner,) or None.
        x_proj_weight: (dt_rank + 2 n, d_inner).  delta_proj_weight: (d_inner, dt_rank).
        out_proj_weight: (d_model, d_inner).  out_proj_bias: (d_model,) or None.
        A: (d_inner, n).  D, delta_bias: (d_inner,) or None.
        backend: selective-scan backend (None: the global choice).
    Returns:
        (b, l, d_model)
    """
    length = xz.shape[-1]
    d_conv, dt_rank, d_state = conv1d_weight.shape[-1], delta_proj_weight.shape[1], A.shape[-1]
    x, z = xz.chunk(2, dim=1)  # (b, d_inner, l) each
    x = F.silu(F.conv1d(x, conv1d_weight, conv1d_bias, padding=d_conv - 1,
                        groups=x.shape[1])[..., :length])  # causal, (b, d_inner, l)
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # (b, l, dt_rank + 2 n)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    delta = (dt @ delta_proj_weight.t()).transpose(1, 2)  # (b, d_inner, l)
    B = B.transpose(1, 2).contiguous()  # (b, n, l)
    C = C.transpose(1, 2).contiguous()  # (b, n, l)
    backend = resolve_backend(backend or get_scan_backend(), xz.device.type)
    y = selective_scan(x, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                       backend=backend)  # (b, d_inner, l)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)  # (b, l, d_model)


def init_dt_projection(dt_proj: nn.Linear, dt_rank: int, dt_min: float, dt_max: float,
                       dt_init: str, dt_scale: float, dt_init_floor: float) -> None:
    """Mamba's initialisation of the Delta projection.

    The weight is uniform in +-dt_rank^-0.5 (or constant); the bias is set so that
    ``softplus(bias)`` = Delta is log-uniform in [dt_min, dt_max], i.e. every channel starts with
    its own timescale. The bias is the inverse softplus: ``dt + log(1 - exp(-dt))``.
    """
    std = dt_rank ** -0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, std)
    elif dt_init == "random":
        nn.init.uniform_(dt_proj.weight, -std, std)
    else:
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}.")
    d_inner = dt_proj.out_features
    dt = torch.exp(torch.rand(d_inner, device=dt_proj.bias.device) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_init_floor)  # (d_inner,)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    dt_proj.bias._no_reinit = True


def _fused_path_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("causal_conv1d") is not None
