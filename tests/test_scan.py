"""Selective scan: backends agree with each other and with the CUDA kernel's recorded outputs."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch

import lightm_edu
from lightm_edu.scan import BackendUnavailableError, selective_scan
from lightm_edu.scan.linear import (combine, linear_scan_chunked_, linear_scan_log_depth,
                                    linear_scan_sequential)
from lightm_edu.scan.parallel import selective_scan_parallel
from lightm_edu.scan.sequential import selective_scan_sequential

from .conftest import SCAN_ARGS, random_scan_inputs, with_grad


def run_with_grads(fn, inputs, softplus=True, out_weight=None, last_weight=None, **kwargs):
    """Output, last state and the gradient of every tensor input of a weighted-sum loss."""
    x = with_grad(inputs)
    out, last = fn(**x, delta_softplus=softplus, return_last_state=True, **kwargs)
    weight = torch.ones_like(out) if out_weight is None else out_weight
    loss = (out * weight).sum()
    if last_weight is not None:
        loss = loss + (last * last_weight).sum()
    loss.backward()
    return out.detach(), last.detach(), {k: v.grad for k, v in x.items() if v is not None}


def assert_same(result_a, result_b, rtol, atol):
    out_a, last_a, grads_a = result_a
    out_b, last_b, grads_b = result_b
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol)
    torch.testing.assert_close(last_a, last_b, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


# ---------------------------------------------------------------- the linear recurrence (chapter 3)

def test_combine_is_associative():
    g = torch.Generator().manual_seed(0)
    p, q, r = [(torch.rand(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64))
               for _ in range(3)]
    left = combine(combine(p, q), r)
    right = combine(p, combine(q, r))
    torch.testing.assert_close(left, right)


@pytest.mark.parametrize("length", [1, 2, 7, 8, 33, 100])
def test_log_depth_and_chunked_equal_sequential(length):
    g = torch.Generator().manual_seed(length)
    a = torch.rand(length, 3, 2, generator=g, dtype=torch.float64)
    x = torch.randn(length, 3, 2, generator=g, dtype=torch.float64)
    expected = linear_scan_sequential(a, x)
    torch.testing.assert_close(linear_scan_log_depth(a, x), expected)
    for chunk in (1, 3, 4, None, length):
        torch.testing.assert_close(linear_scan_chunked_(a, x.clone(), chunk=chunk), expected)


@pytest.mark.parametrize("length,chunk", [(1, None), (10, 3), (16, 4), (17, 5), (40, None), (100, 2), (1000, 3)])
def test_chunked_with_initial_state_and_reverse(length, chunk):
    g = torch.Generator().manual_seed(7)
    a = torch.rand(length, 4, generator=g, dtype=torch.float64)
    x = torch.randn(length, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(linear_scan_chunked_(a, x.clone(), h0, chunk),
                               linear_scan_sequential(a, x, h0))
    # Reverse: h_t = a_t h_{t+1} + x_t is the forward scan of the time-reversed sequence.
    expected = linear_scan_sequential(a.flip(0), x.flip(0), h0).flip(0)
    torch.testing.assert_close(linear_scan_chunked_(a, x.clone(), h0, chunk, reverse=True), expected)


# ---------------------------------------------------- sequential == parallel (outputs and gradients)

OPTIONS = list(itertools.product([True, False], repeat=4))  # D, z, delta_bias, softplus


@pytest.mark.parametrize("with_D,with_z,with_bias,softplus", OPTIONS)
def test_parallel_matches_sequential_all_options(with_D, with_z, with_bias, softplus):
    inputs = random_scan_inputs(batch=2, d=3, length=19, n=4, with_D=with_D, with_z=with_z,
                                with_bias=with_bias, dtype=torch.float32, positive_delta=not softplus)
    reference = run_with_grads(selective_scan_sequential, inputs, softplus)
    assert_same(run_with_grads(selective_scan_parallel, inputs, softplus), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch,length", [(1, 1), (2, 1), (1, 2), (1, 64), (3, 63), (2, 128), (2, 257)])
def test_parallel_matches_sequential_lengths(batch, length):
    inputs = random_scan_inputs(batch=batch, d=5, length=length, n=3, dtype=torch.float32, seed=length)
    reference = run_with_grads(selective_scan_sequential, inputs)
    assert_same(run_with_grads(selective_scan_parallel, inputs), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("segment,chunk,save_states", [
    (1, None, False), (5, 2, False), (16, 4, False), (33, 5, False), (64, 1, False), (64, 64, False),
    (None, None, True), (16, None, True),
])
def test_parallel_segments_chunks_and_saved_states_match_sequential(segment, chunk, save_states):
    # Several segments exercise the states and gradients handed from one segment to the next;
    # save_states=True takes the states from the forward pass instead of recomputing them.
    inputs = random_scan_inputs(batch=2, d=4, length=70, n=3, dtype=torch.float64, seed=3)
    g = torch.Generator().manual_seed(11)
    out_weight = torch.randn(2, 4, 70, generator=g, dtype=torch.float64)
    last_weight = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    reference = run_with_grads(selective_scan_sequential, inputs, out_weight=out_weight, last_weight=last_weight)
    result = run_with_grads(selective_scan_parallel, inputs, out_weight=out_weight, last_weight=last_weight,
                            segment=segment, chunk=chunk, save_states=save_states)
    assert_same(result, reference, rtol=1e-10, atol=1e-10)


def test_parallel_matches_sequential_realistic_size_float32():
    inputs = random_scan_inputs(batch=2, d=16, length=3000, n=16, dtype=torch.float32, seed=5)
    reference = run_with_grads(selective_scan_sequential, inputs)
    assert_same(run_with_grads(selective_scan_parallel, inputs), reference, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("length", [1, 6, 8])
@pytest.mark.parametrize("backend", ["sequential", "parallel"])
def test_gradcheck_float64(backend, length):
    inputs = random_scan_inputs(batch=2, d=2, length=length, n=2, dtype=torch.float64, seed=length)
    names = [k for k in SCAN_ARGS if inputs[k] is not None]
    kwargs = {"segment": 3, "chunk": 2} if backend == "parallel" else {}
    fn = selective_scan_parallel if backend == "parallel" else selective_scan_sequential

    def f(*tensors):
        out, last = fn(**dict(zip(names, tensors)), delta_softplus=True, return_last_state=True, **kwargs)
        return out, last

    assert torch.autograd.gradcheck(f, tuple(inputs[k].requires_grad_() for k in names))


# ----------------------------------------------------------- the CUDA kernel's recorded outputs

@pytest.mark.parametrize("backend", ["sequential", "parallel"])
def test_matches_mamba_ssm_fixture(backend, scan_fixture):
    inputs = scan_fixture["inputs"]
    out, last, grads = run_with_grads(lambda **kw: selective_scan(**kw, backend=backend), inputs,
                                      softplus=scan_fixture["delta_softplus"],
                                      out_weight=scan_fixture["out_grad_weight"])
    scale = scan_fixture["out"].abs().max()
    torch.testing.assert_close(out, scan_fixture["out"], rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(last, scan_fixture["last_state"], rtol=1e-4, atol=1e-5)
    assert set(grads) == set(SCAN_ARGS)
    for name in SCAN_ARGS:
        expected = scan_fixture["grads"][name]
        torch.testing.assert_close(grads[name], expected, rtol=1e-4, atol=1e-5 * expected.abs().max(),
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


# ---------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["sequential", "parallel"])
def test_half_precision_inputs_are_computed_in_float32(backend, dtype):
    inputs = random_scan_inputs(batch=1, d=3, length=12, n=2, dtype=torch.float32)
    half = {k: (v.to(dtype) if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
    out = selective_scan(**half, delta_softplus=True, backend=backend)
    assert out.dtype == dtype
    exact = selective_scan(**{k: v.float() for k, v in half.items()}, delta_softplus=True, backend="sequential")
    torch.testing.assert_close(out.float(), exact, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------- choosing a backend

def test_backend_argument_and_context_and_setter_and_env(monkeypatch):
    inputs = random_scan_inputs(length=5, dtype=torch.float32)
    calls = []
    import lightm_edu.scan as scan_module

    for name in ("sequential", "parallel"):
        original = scan_module._IMPLEMENTATIONS[name]
        monkeypatch.setitem(scan_module._IMPLEMENTATIONS, name,
                            lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))
    monkeypatch.delenv(scan_module.ENV_VAR, raising=False)
    selective_scan(**inputs, backend="sequential")
    assert calls[-1] == "sequential"
    selective_scan(**inputs)  # "auto" on the CPU
    assert calls[-1] == "parallel"
    monkeypatch.setenv(scan_module.ENV_VAR, "sequential")
    selective_scan(**inputs)
    assert calls[-1] == "sequential"
    lightm_edu.set_scan_backend("parallel")  # the setter wins over the environment
    try:
        selective_scan(**inputs)
        assert calls[-1] == "parallel"
        with lightm_edu.scan_backend("sequential"):  # the context manager wins over the setter
            selective_scan(**inputs)
            assert calls[-1] == "sequential"
            selective_scan(**inputs, backend="parallel")  # the argument wins over everything
            assert calls[-1] == "parallel"
        assert lightm_edu.get_scan_backend() == "parallel"  # restored after the block
    finally:
        lightm_edu.set_scan_backend(None)
    assert lightm_edu.get_scan_backend() == "sequential"  # back to the environment variable


def test_unknown_backend_names_are_rejected(monkeypatch):
    inputs = random_scan_inputs(length=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="Unknown scan backend 'cuda'.*sequential, parallel"):
        selective_scan(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="Unknown scan backend"):
        lightm_edu.set_scan_backend("fast")
    monkeypatch.setenv("LIGHTM_EDU_SCAN_BACKEND", "turbo")
    with pytest.raises(ValueError, match="environment variable LIGHTM_EDU_SCAN_BACKEND"):
        selective_scan(**inputs)


def test_mamba_ssm_backend_on_cpu_says_how_to_fix():
    inputs = random_scan_inputs(length=3, dtype=torch.float32)
    with pytest.raises(BackendUnavailableError, match="backend='parallel'") as error:
        selective_scan(**inputs, backend="mamba_ssm")
    message = str(error.value)
    assert "CUDA tensors only" in message
    if not lightm_edu.scan.mamba_ssm_installed():
        assert "pip install mamba-ssm --no-build-isolation" in message


def test_auto_logs_its_choice_once(caplog, monkeypatch):
    import lightm_edu.scan as scan_module

    monkeypatch.setattr(scan_module, "_auto_logged", set())
    monkeypatch.delenv(scan_module.ENV_VAR, raising=False)
    inputs = random_scan_inputs(length=3, dtype=torch.float32)
    with caplog.at_level(logging.INFO, logger="lightm_edu.scan"):
        selective_scan(**inputs, backend="auto")
        selective_scan(**inputs, backend="auto")
    messages = [r.getMessage() for r in caplog.records if r.name == "lightm_edu.scan"]
    assert messages == ["selective_scan backend 'auto' chose 'parallel' for cpu tensors"]


def test_available_backends_on_cpu():
    assert lightm_edu.available_backends("cpu") == ["sequential", "parallel"]


# --------------------------------------------------------------------------- input validation

def _bad(**changes):
    inputs = random_scan_inputs(batch=2, d=4, length=10, n=3, dtype=torch.float32)
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize("backend", ["sequential", "parallel"])
@pytest.mark.parametrize("changes,pattern", [
    ({"u": torch.zeros(2, 4)}, r"`u` must have 3 dimensions"),
    ({"delta": torch.zeros(2, 4, 9)}, r"`delta` must have shape \(2, 4, 10\), got \(2, 4, 9\)"),
    ({"A": torch.zeros(5, 3)}, r"`A` must have shape \(d, n\) = \(4, n\)"),
    ({"A": torch.zeros(4, 3, dtype=torch.complex64)}, r"complex `A` is not supported"),
    ({"B": torch.zeros(2, 10, 3)}, r"`B` must have shape \(2, 3, 10\)"),
    ({"C": torch.zeros(2, 2, 10)}, r"`C` must have shape \(2, 3, 10\)"),
    ({"D": torch.zeros(3)}, r"`D` must have shape \(4,\)"),
    ({"z": torch.zeros(1, 4, 10)}, r"`z` must have shape \(2, 4, 10\)"),
    ({"delta_bias": torch.zeros(4, 1)}, r"`delta_bias` must have shape \(4,\)"),
    ({"B": None}, r"`B` is required but was None"),
    ({"u": [1.0, 2.0]}, r"`u` must be a torch.Tensor"),
    ({"delta": torch.zeros(2, 4, 10, dtype=torch.float64)}, r"`delta` has dtype float64 but `u` has float32"),
    ({"C": torch.zeros(2, 3, 10, dtype=torch.int64)}, r"`C` must be a floating-point tensor"),
    ({"A": torch.zeros(4, 3, dtype=torch.float16)}, r"`A` has dtype float16; it must be float32"),
])
def test_bad_inputs_name_the_argument(backend, changes, pattern):
    with pytest.raises(ValueError, match=pattern) as error:
        selective_scan(**_bad(**changes), backend=backend)
    assert "Expected shapes: u, delta, z: (batch, d, length)" in str(error.value)


def test_parallel_rejects_bad_segment():
    with pytest.raises(ValueError, match="segment must be a positive number of steps"):
        selective_scan_parallel(**_bad(), segment=0)


def test_log_depth_partial_rounds_hold_partial_prefixes():
    # After k rounds, position t combines the 2^k steps ending at t (or all of them, if fewer).
    a = torch.rand(8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    one_round = linear_scan_log_depth(a, x, rounds=1)
    torch.testing.assert_close(one_round[1:], a[1:] * x[:-1] + x[1:])
    torch.testing.assert_close(linear_scan_log_depth(a, x, rounds=3), linear_scan_sequential(a, x))
    torch.testing.assert_close(linear_scan_log_depth(a, x, rounds=0), x)
