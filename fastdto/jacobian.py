"""Batched decoder Jacobians by forward-mode automatic differentiation.

A decoder maps latents ``(B, d)`` to outputs ``(B, ...)``. Its Jacobian at one latent is an
``(n, d)`` matrix with ``n`` the number of outputs per sample. Because ``d`` is small and ``n`` large,
forward mode is the right tool: ``d`` Jacobian-vector products with one-hot tangents give all
columns, and ``torch.func.vmap`` runs those products as a single batched decoder call per chunk of
latents. Reverse mode would need ``n`` backward passes (or ``n``-fold memory).

Latents are processed in chunks, so memory is bounded by the chunk size, never by ``N``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["jacobians", "DEFAULT_MEMORY_BUDGET"]

#: Default working-memory budget for one chunk of Jacobians (bytes).
DEFAULT_MEMORY_BUDGET = 512 * 2**20

# Forward-mode Jacobian memory per latent, in units of (d + 1) * n output elements: outputs and their
# tangents, the Jacobian chunk handed to the engine, and slack. The decoder's intermediate
# activations (each carried with d tangents) are measured and added (see _probe).
_BYTES_FACTOR = 4


def _is_integer(x) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _check_dense(x: torch.Tensor, name: str) -> None:
    """A tensor whose values can be read: not a meta tensor, not sparse."""
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor: it has no values")
    if x.layout != torch.strided:
        raise ValueError(f"{name} must be a dense tensor, got layout {x.layout}")


# Why half precision is refused, and the way out for a half-precision decoder.
_HALF_WHY = ("; DtO needs float32 or float64 Jacobians (half-precision arithmetic leaves relative errors of "
             "about 1e-3 to 1e-2 in them)")
_HALF_HINT = _HALF_WHY + ": evaluate a float32 copy, e.g. copy.deepcopy(decoder).float() with latents.float()"


def _check_latents(latents) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor of shape (N, d), got {type(latents).__name__}"
                        + ("; convert with torch.from_numpy" if isinstance(latents, np.ndarray) else ""))
    _check_dense(latents, "latents")
    if latents.ndim != 2:
        raise ValueError(f"latents must have shape (N, d), got shape {tuple(latents.shape)}"
                         + ("; for one point pass latents[None]" if latents.ndim == 1 else ""))
    if latents.shape[0] == 0:
        raise ValueError("latents is empty: need at least one latent point (N >= 1)")
    if latents.shape[1] == 0:
        raise ValueError("latents has d = 0 latent dimensions; need d >= 1")
    if latents.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"latents must be float32 or float64, got {latents.dtype}" + (
            _HALF_HINT if latents.is_floating_point() else ""))
    if not bool(torch.isfinite(latents).all()):
        bad = int((~torch.isfinite(latents)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"latents contains NaN or Inf (first at row {bad})")
    return latents.detach().contiguous()  # forward mode cannot make dual tensors of expanded ones


def _module_of(decoder) -> torch.nn.Module | None:
    """The module behind the decoder: itself, or the owner of a bound method such as ``vae.decode``."""
    if isinstance(decoder, torch.nn.Module):
        return decoder
    owner = getattr(decoder, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _check_decoder_device(decoder, latents: torch.Tensor) -> None:
    if not callable(decoder):
        raise TypeError(f"decoder must be callable (an nn.Module or a function), got {type(decoder).__name__}")
    module = _module_of(decoder)
    if module is not None:
        for name, p in module.named_parameters():
            if p.device != latents.device:
                raise ValueError(
                    f"decoder parameter '{name}' is on {p.device} but latents are on {latents.device}; "
                    "move one of them (e.g. latents.to(next(decoder.parameters()).device))")
            if p.is_floating_point() and p.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"decoder parameter '{name}' is {p.dtype}" + _HALF_HINT)
            if p.is_floating_point() and p.dtype != latents.dtype:
                raise TypeError(
                    f"latents are {latents.dtype} but decoder parameter '{name}' is {p.dtype}; "
                    f"pass latents.to({p.dtype})")
            break


@contextmanager
def _eval_mode(decoder):
    """Evaluates a module (or a bound method's module) in eval mode (BatchNorm statistics, no Dropout)
    and restores its mode."""
    module = _module_of(decoder)
    if module is not None:
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            yield
        finally:
            for m, training in modes:
                m.train(training)
    else:
        yield


def _check_output(y, batch: int, name: str = "decoder output") -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"the decoder must return a torch.Tensor, got {type(y).__name__}: wrap it to return the "
                        "tensor to differentiate, e.g. lambda z: vae.decode(z)[0] or .logits (call vae.eval() "
                        "first: a function is not switched to eval mode)")
    if y.ndim < 1 or y.shape[0] != batch:
        raise ValueError(
            f"the decoder must keep the batch dimension: input batch {batch}, output shape {tuple(y.shape)}")
    _check_dense(y, "the decoder's output")
    if y.dtype not in (torch.float32, torch.float64):  # the engine takes float32 or float64 Jacobians
        raise TypeError(f"the decoder must return float32 or float64 outputs, got {y.dtype}" + (
            _HALF_WHY if y.is_floating_point() else ""))
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return y


def _flat(decoder: Callable) -> Callable:
    def f(z):
        # A copy: a decoder that writes to its input must change neither the caller's latents nor
        # the chunk a fallback method retries; and autograd refuses in-place writes to a leaf.
        y = decoder(z.clone())
        if not isinstance(y, torch.Tensor) or y.ndim < 1 or y.shape[0] != z.shape[0]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"the decoder must keep the batch dimension: input batch {z.shape[0]}, output {shape}")
        return y.reshape(z.shape[0], -1)
    return f


def _jacobian_forward(f, z: torch.Tensor, basis: torch.Tensor):
    """All requested columns in one vmapped forward-mode call: returns (output, J as (k, B, n))."""
    def column(t):
        return torch.func.jvp(f, (z,), (t,))

    y, jt = torch.func.vmap(column)(basis)
    return y[0], jt


class _FallbackFailed(Exception):
    """The double-vjp method cannot give this decoder's exact Jacobian (the message says why)."""


def _jacobian_double_vjp(f, z: torch.Tensor, basis: torch.Tensor):
    """Fallback when an op has no forward-mode rule: J t = d/du <J^T u, t> (two reverse passes).

    That is exact only if every op's backward is itself differentiable in u. An op without a second
    derivative raises; one whose backward leaves autograd (a custom Function computing its gradient
    outside torch) would silently drop its part of J. So one random projection w of J t is checked
    against a plain first-order backward, (J^T w) . t, which such ops do support."""
    # Autograd needs normal tensors: not inference mode, and not latents made in it.
    with torch.inference_mode(False), torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)
        y = f(zz)
        u = torch.zeros_like(y, requires_grad=True)
        try:
            (g,) = torch.autograd.grad(y, zz, u, create_graph=True)
            cols = torch.stack([torch.autograd.grad(g, u, t, retain_graph=True)[0] for t in basis])
        except (RuntimeError, NotImplementedError) as err:
            raise _FallbackFailed(str(err).splitlines()[0][:200]) from None
        gen = torch.Generator(device=y.device).manual_seed(0)  # the caller's RNG stream stays untouched
        w = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device)
        (jtw,) = torch.autograd.grad(y, zz, w)
    cols, jtw = cols.detach(), jtw.detach()
    projected = torch.einsum("kbn,bn->kb", cols, w)
    expected = torch.einsum("bd,kbd->kb", jtw, basis)
    scale = torch.einsum("kbn,bn->kb", cols.abs(), w.abs()) + (jtw.abs() * basis).sum(-1)
    tol = math.sqrt(torch.finfo(y.dtype).eps)
    if not bool(((projected - expected).abs() <= tol * scale + torch.finfo(y.dtype).tiny).all()):
        raise _FallbackFailed("second-order reverse mode disagrees with first-order reverse mode "
                              "(an operation's backward is not differentiable by autograd)")
    return y.detach(), cols


def _jacobian_reverse(f, z: torch.Tensor, columns: Sequence[int]):
    """Last resort, exact for any decoder with a first-order backward: one reverse pass per output
    (row of J), n in all. Samples must not interact, as everywhere here."""
    with torch.inference_mode(False), torch.enable_grad():
        zz = z.detach().clone().requires_grad_(True)
        y = f(zz)
        n = y.shape[1]
        jt = torch.empty((len(columns), z.shape[0], n), dtype=y.dtype, device=y.device)
        for j in range(n):
            (g,) = torch.autograd.grad(y[:, j].sum(), zz, retain_graph=j + 1 < n)
            jt[:, :, j] = g[:, columns].T
    return y.detach(), jt


def bytes_per_latent(n_outputs: int, n_columns: int, itemsize: int, activation_bytes: int = 0) -> int:
    """Forward-mode working set per latent. ``activation_bytes``: bytes of the decoder's intermediate
    results per latent (see ``_probe``); forward mode carries each with ``n_columns`` tangents."""
    return (n_columns + 1) * (_BYTES_FACTOR * n_outputs * itemsize + activation_bytes)


class _CountOutputBytes(TorchDispatchMode):
    """Sums the bytes of every tensor the operations inside produce."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.total += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


def _probe(decoder, latents: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The decoder's output on the first two latents, and the bytes its operations produce per latent:
    the difference between that call and one on a single latent, so that batch-independent work
    (weight transposes, constants) cancels. An upper bound on the activations alive at once, which is
    what a chunk must leave room for (0 with a single latent: one chunk anyway)."""
    counts, outputs = [], []
    for batch in (1, 2) if latents.shape[0] >= 2 else (1,):
        # Errors here name shapes the caller never passed: each gets a note saying where they come from.
        where = (f"fastdto.jacobians: raised when the decoder was first called, on the first {batch} of the "
                 f"latents (shape ({batch}, {latents.shape[1]})), to size the chunks")
        try:
            with _CountOutputBytes() as mode:
                y = decoder(latents[:batch].clone())  # a decoder that writes to its input must not change ours
        except Exception as err:
            if _module_of(decoder) is None:
                where += ("; only modules and their bound methods are switched to eval mode: a function that "
                          "wraps a model in training mode (BatchNorm, Dropout) needs model.eval() first")
            err.add_note(where)
            raise
        try:
            _check_output(y, batch)
        except (TypeError, ValueError) as err:
            err.add_note(where)
            raise
        counts.append(mode.total)
        outputs.append(y)
    if len(outputs) == 2 and not _same_output(outputs[0][0], outputs[1][0]):
        raise ValueError(
            "the decoder's output for the first latent changed when a second latent was passed with it: its samples "
            "interact (batch statistics such as BatchNorm in training mode, z.mean(0), a softmax over the batch) "
            "or it draws random numbers (Dropout in training mode). Jacobians of such a decoder mix the samples' "
            "derivatives, so DtO would be wrong: call model.eval() first, or pass the module or its bound method "
            "(fastdto switches those to eval mode), and keep each output row a function of its own latent")
    return y, max(0, counts[-1] - counts[0])


def _same_output(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to what a different batch size may bring: other kernels and sums, and TF32 matrix
    products on GPUs (set_float32_matmul_precision("high"), about 1e-3 relative). Samples that interact
    through batch statistics or random draws move outputs by far more than 1% of their scale."""
    scale = float(a.abs().max()) if a.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-2, atol=1e-2 * scale + 1e-30))


def iter_jacobian_chunks(decoder, latents: torch.Tensor, columns: Sequence[int] | None = None, *,
                         chunk_size: int | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET
                         ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields ``(start, J)`` with ``J`` of shape ``(B, n, k)`` for consecutive chunks of latents.

    ``columns`` selects the latent axes to differentiate along (default: all ``d``). ``J`` is a strided
    view of a ``(k, B, n)`` buffer: each column is contiguous, which is what the engine reads fastest.
    """
    latents = _check_latents(latents)
    _check_decoder_device(decoder, latents)
    N, d = latents.shape
    columns = list(range(d)) if columns is None else [int(c) for c in columns]
    if chunk_size is not None:
        if not _is_integer(chunk_size) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        chunk_size = int(chunk_size)
    if isinstance(memory_budget, bool) or not (isinstance(memory_budget, numbers.Real) and 0 < memory_budget < math.inf):
        raise ValueError(f"memory_budget must be a positive, finite number of bytes, got {memory_budget!r}")
    f = _flat(decoder)
    method = "forward"  # then "double-vjp", then "reverse", each only where the one before cannot work
    # Autocast off: under a caller's torch.autocast the decoder would run in half precision, and its
    # Jacobians with it; DtO is computed in the decoder's own float32 or float64.
    no_autocast = (torch.autocast(latents.device.type, enabled=False) if latents.device.type in ("cpu", "cuda")
                   else nullcontext())
    with _eval_mode(decoder), torch.no_grad(), no_autocast:
        probe, activation_bytes = _probe(decoder, latents)
        n = probe[0].numel()
        if n == 0:
            raise ValueError("the decoder returns an empty output per sample")
        per_latent = bytes_per_latent(n, len(columns), probe.element_size(), activation_bytes)
        B = chunk_size or max(1, int(memory_budget // per_latent))
        # glibc's heap fragments unless it is trimmed now and then (see below): after every 16 MiB of
        # chunk working set, so that small chunks do not trim (about 1 ms) each time.
        trim_cpu, since_trim = latents.device.type == "cpu", 0
        for start in range(0, N, B):
            z = latents[start:start + B]
            basis = torch.zeros((len(columns),) + tuple(z.shape), dtype=z.dtype, device=z.device)
            for i, c in enumerate(columns):
                basis[i, :, c] = 1
            if method == "forward":
                try:
                    y, jt = _jacobian_forward(f, z, basis)
                except (NotImplementedError, RuntimeError) as err:
                    if "random operation" in str(err):
                        raise ValueError(
                            "the decoder draws random numbers (Dropout in training mode, or sampling inside the "
                            "decoder), so its Jacobian changes from call to call and DtO is not defined: call "
                            "model.eval() first, or pass the module or its bound method (fastdto switches those "
                            "to eval mode)") from err
                    if not _is_missing_forward_rule(err):
                        raise
                    warnings.warn(
                        "the decoder cannot run under forward-mode AD with vmap "
                        f"({str(err).splitlines()[0][:200]}); computing exact Jacobians by the slower "
                        "double-vjp method instead", RuntimeWarning, stacklevel=3)
                    method = "double-vjp"
            if method == "double-vjp":
                try:
                    y, jt = _jacobian_double_vjp(f, z, basis)
                except _FallbackFailed as err:
                    warnings.warn(
                        f"the double-vjp method cannot differentiate this decoder exactly ({err}); "
                        "computing exact Jacobians by reverse mode instead, one backward pass per output "
                        "(much slower)", RuntimeWarning, stacklevel=3)
                    method = "reverse"
            if method == "reverse":
                y, jt = _jacobian_reverse(f, z, columns)
            _check_output(y, z.shape[0])
            if jt.shape[:2] != (len(columns), z.shape[0]):
                raise ValueError(f"the decoder must keep the batch dimension: got Jacobian shape {tuple(jt.shape)}")
            yield start, jt.permute(1, 2, 0)
            del y, jt, basis  # before the next chunk is computed, not after
            since_trim += z.shape[0] * per_latent
            if trim_cpu and since_trim >= _TRIM_EVERY_BYTES:
                _return_freed_memory()
                since_trim = 0


def _libc_malloc_trim():
    try:
        import ctypes
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_malloc_trim()
# A trim walks the whole heap (about 1 ms on a fragmented one): once per this much chunk working set,
# which takes far longer than that to compute.
_TRIM_EVERY_BYTES = 16 << 20


def _return_freed_memory() -> None:
    """Hands the heap's free pages back to the OS between chunks (glibc). After a chunk's large
    buffers are unmapped, glibc raises its mmap threshold and serves later multi-megabyte buffers from
    the heap, which then fragments: without this, resident memory grew with N (4.8 GB at N = 100,000)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _is_missing_forward_rule(err: Exception) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("forward ad", "forward-mode", "forward mode", "jvp", "not implemented",
                                   "vmap", "batching rule"))


def jacobians(decoder, latents: torch.Tensor, *, chunk_size: int | None = None,
              memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """Decoder Jacobians at every latent point.

    Args:
        decoder: any callable mapping a ``(B, d)`` tensor to a ``(B, ...)`` tensor, typically an
            ``nn.Module``. Modules (and the module of a bound method such as ``vae.decode``) are
            evaluated in eval mode (mode restored afterwards).
        latents: ``(N, d)`` float tensor on the decoder's device and dtype.
        chunk_size: latents per forward-mode call; default chosen from ``memory_budget``.
        memory_budget: approximate bytes of working memory per chunk (default 512 MiB), counting the
            decoder's intermediate results as well as the Jacobians.

    Returns:
        ``(N, n, d)`` tensor, ``n`` the number of outputs per sample (the product of the decoder's
        output shape without the batch dimension), in the decoder's output dtype and on its device.
        This materialises all ``N`` Jacobians; :func:`fastdto.evaluate` never does.
    """
    out = None
    for start, J in iter_jacobian_chunks(decoder, latents, chunk_size=chunk_size, memory_budget=memory_budget):
        if out is None:
            out = torch.empty((latents.shape[0],) + tuple(J.shape[1:]), dtype=J.dtype, device=J.device)
        out[start:start + J.shape[0]] = J
    return out
