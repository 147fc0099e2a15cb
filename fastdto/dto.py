"""Distance to Orthogonality (DtO): the public entry points and their result types.

For a decoder Jacobian ``J = U S V^T`` (``n x d``), ``V``'s rows index the latent axes and its columns the
singular directions. DtO of one sample is ``||V - P(V)||_F`` with ``P(V)`` the signed permutation matrix
nearest to ``V`` in the L1 sense (Rolinek, Zietlow and Martius, CVPR 2019); the reported DtO is the mean
over samples. Zero means every latent axis is exactly a singular direction of the decoder.

Pipeline per sample, in the compiled engine: ``G = J^T J`` with float64 accumulation, cyclic Jacobi on
``G``, ``sigma = sqrt(eig(G))`` descending, then the nearest signed permutation (certified row-maximum
fast path, else an exact Hungarian assignment). Through the Gram matrix the error of ``sigma_min``
grows like ``eps64 * (sigma_max / sigma_min)^2`` and that of ``V`` like ``eps64 * sigma_max^2 /
(sigma_k^2 - sigma_k+1^2)``, but also no faster than ``eps64 / c`` and ``eps64 / (c * relgap)``, where ``c``
is the smallest eigenvalue of the Gram of ``J`` with unit columns (Jacobi's relative accuracy). A sample is
recomputed from ``J`` itself, by Householder QR plus one-sided Jacobi, only where both bounds exceed
``eps64 / gram_rcond^2``: ``J`` ill-conditioned with its columns mixed. A passive latent (one tiny column)
makes ``sigma_min / sigma_max`` tiny but leaves ``c`` near 1, so such samples keep the fast route; so do
exactly zero columns of a float32 ``J`` (their squares cannot underflow, so Jacobi finds them exactly).

Devices: CUDA tensors are processed on their own GPU, on the current stream, when the engine was built
with its CUDA backend (``fastdto.build_info()["cuda"]``) and a device is usable; results stay on that
device and the only host synchronisation is the final read of the flags and of the mean. Without the
CUDA backend, CUDA tensors are copied to the CPU engine and the results are moved back. ``solver="milp"``
always solves on the CPU (``V`` is copied there).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

import _fastdto_engine as _engine

from .jacobian import DEFAULT_MEMORY_BUDGET, _check_dense, _check_latents, _is_integer, iter_jacobian_chunks

__all__ = ["DtOResult", "SignedPermutation", "evaluate", "dto_from_jacobians",
           "nearest_signed_permutation", "DEFAULT_GRAM_RCOND", "MAX_DIM"]

MAX_DIM: int = _engine.MAX_DIM
#: ``eps64 ** (1/4)``: below this ``sigma_min / sigma_max`` (of ``J`` with unit columns) the Gram route
#: could lose more than ``sqrt(eps64)`` in ``V``; such samples are recomputed on ``J``. For float32 Jacobians this keeps the
#: Gram route's error below the input's own rounding error ``eps32 * sigma_max / sigma_min``.
DEFAULT_GRAM_RCOND: float = _engine.EPS64 ** 0.25
_SOLVERS = ("exact", "greedy", "milp")
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}
_cuda_ok: bool | None = None


def _cuda_engine_usable() -> bool:
    """Whether the compiled engine has its CUDA backend and sees a device (checked once, lazily, so
    that importing fastdto never initialises CUDA)."""
    global _cuda_ok
    if _cuda_ok is None:
        info = _engine.build_info() if hasattr(_engine, "cuda_dto_from_jacobians") else {"cuda": False}
        _cuda_ok = bool(info["cuda"]) and int(info.get("cuda_devices", 0)) > 0
    return _cuda_ok


def _nonfinite_message(name: str, index: int) -> str:
    return f"{name}[{index}] contains NaN or Inf"


@dataclass(frozen=True, repr=False)
class SignedPermutation:
    """Nearest signed permutations of square matrices (batched, or a single one when the input was 2-D).

    ``P[i, permutation[i]] = signs[i]`` and zero elsewhere; ``distance = ||V - P||_F``.
    """

    permutation: torch.Tensor  # (N, d) int64: column picked for row i
    signs: torch.Tensor        # (N, d) int8 in {-1, +1}
    distance: torch.Tensor     # (N,) float64
    certified: torch.Tensor    # (N,) bool: the greedy row-maximum certificate held

    def matrix(self) -> torch.Tensor:
        """The signed permutation matrices, ``(N, d, d)`` (or ``(d, d)``), float64."""
        perm = self.permutation if self.permutation.ndim == 2 else self.permutation[None]
        signs = self.signs if self.signs.ndim == 2 else self.signs[None]
        N, d = perm.shape
        P = torch.zeros((N, d, d), dtype=torch.float64, device=perm.device)
        P.scatter_(2, perm[:, :, None], signs[:, :, None].to(torch.float64))
        return P if self.permutation.ndim == 2 else P[0]

    def __repr__(self) -> str:
        return f"SignedPermutation(shape={tuple(self.permutation.shape)}, distance={self.distance})"


@dataclass(frozen=True, repr=False, eq=False)  # eq: tensors have no single truth value; compare fields
class DtOResult:
    """Result of :func:`evaluate` / :func:`dto_from_jacobians`. Tensors live on the input's device.

    Rows and columns refer to the latent axes in ``active`` (all of them unless restricted); ``k`` is
    their number and ``N`` the number of samples (latent points, or Jacobians).

    Attributes:
        dto, std: mean and population standard deviation (ddof 0) of ``per_sample``.
        per_sample: ``(N,)`` float64, ``||V_i - P(V_i)||_F`` with ``P(V_i)`` the nearest signed permutation.
        singular_values: ``(N, k)`` float64, descending.
        permutation, signs: ``(N, k)`` int64 and int8: active latent ``r`` is matched to singular direction
            ``permutation[:, r]`` with sign ``signs[:, r]``.
        active: ``(k,)`` int64, the latent indices used.
        ambiguous: ``(N,)`` bool, ``V_i`` is not unique (two singular values within ``ambiguity_tol *
            sigma_max``, e.g. several passive latents): its distance depends on an arbitrary basis.
        svd_path: ``(N,)`` bool, the sample was recomputed on ``J`` (Gram too ill-conditioned).
        certified: ``(N,)`` bool, each row's largest entry of ``|V_i|`` sat in its own column, which proves
            the row maxima optimal without an assignment solve. Always False under ``solver="milp"``
            (the certificate is the engine's, not HiGHS's proof) and says nothing about correctness
            elsewhere: uncertified samples are solved exactly (``"exact"``) or approximately (``"greedy"``).
        solver: the ``solver`` option used.
        V: ``(N, k, k)`` float64 right singular vectors (columns), when ``return_v=True``; else None.
    """

    dto: float                      # mean of per_sample
    std: float                      # population standard deviation (ddof = 0) of per_sample
    per_sample: torch.Tensor        # (N,) float64: ||V_i - P(V_i)||_F
    singular_values: torch.Tensor   # (N, k) float64, descending
    permutation: torch.Tensor       # (N, k) int64: active latent r is matched to singular direction permutation[:, r]
    signs: torch.Tensor             # (N, k) int8: sign of that match
    active: torch.Tensor            # (k,) int64: latent indices used
    ambiguous: torch.Tensor         # (N,) bool: V not unique (near-repeated or several zero singular values)
    svd_path: torch.Tensor          # (N,) bool: sample recomputed on J (ill-conditioned Gram)
    certified: torch.Tensor         # (N,) bool: greedy certificate held (no assignment solve needed)
    solver: str = "exact"
    V: torch.Tensor | None = field(default=None)  # (N, k, k) float64 when requested

    def __repr__(self) -> str:
        N, k = self.singular_values.shape
        shown = self.active.tolist() if k <= 12 else f"{k} of them"
        return (f"DtOResult(dto={self.dto:.4f} ± {self.std:.4f}, N={N}, latents={shown}, "
                f"ambiguous={int(self.ambiguous.sum())}, svd_path={int(self.svd_path.sum())}, solver='{self.solver}')")


MAX_THREADS = _engine.MAX_THREADS


def _check_threads(threads) -> int | None:
    if threads is not None and not (_is_integer(threads) and 1 <= threads <= MAX_THREADS):
        raise ValueError(f"threads must be None or an integer in [1, {MAX_THREADS}], got {threads!r}")
    return None if threads is None else int(threads)


def _check_solver(solver) -> str:
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    return solver


def _resolve_active(active, d: int, latents: torch.Tensor | None) -> list[int]:
    """Latent indices from None (all), 'auto' (std of latents > 0.5), a bool mask or indices."""
    if active is None:
        return list(range(d))
    if isinstance(active, str):
        if active != "auto":
            raise ValueError(f"active must be None, 'auto', a boolean mask or indices, got {active!r}")
        if latents is None:
            raise ValueError("active='auto' needs the latents (it keeps axes whose std over the latents "
                             "exceeds 0.5); with Jacobians alone pass indices or a mask")
        if latents.shape[0] < 2:
            raise ValueError("active='auto' needs at least 2 latent points (it keeps the axes whose std over "
                             f"the latents exceeds 0.5); got {latents.shape[0]}")
        from .metrics import active_latents
        mask = torch.as_tensor(np.asarray(active_latents(latents)), dtype=torch.bool)
        idx = mask.nonzero().flatten().tolist()
        if not idx:
            raise ValueError("active='auto' found no active latent: every latent's std over the given "
                             "latents is <= 0.5 (pass active=None to use all latents)")
        return idx
    from .metrics._validation import latent_indices
    idx = latent_indices(active, d)
    if not idx:
        raise ValueError("active selects no latent")
    return idx


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _check_options(solver, gram_rcond, ambiguity_tol, return_v, threads):
    """Checks the options evaluate and dto_from_jacobians share; returns the tolerances as floats."""
    _check_solver(solver)
    if not (_is_real(gram_rcond) and 0.0 <= gram_rcond <= 1.0):
        raise ValueError(f"gram_rcond must be a number in [0, 1], got {gram_rcond!r}")
    if ambiguity_tol is not None and not (_is_real(ambiguity_tol) and 0.0 <= ambiguity_tol < 1.0):
        raise ValueError(f"ambiguity_tol must be None or a number in [0, 1), got {ambiguity_tol!r}")
    if not isinstance(return_v, bool):
        raise TypeError(f"return_v must be a bool, got {return_v!r}")
    threads = _check_threads(threads)
    return float(gram_rcond), None if ambiguity_tol is None else float(ambiguity_tol), threads


def _default_ambiguity_tol(dtype) -> float:
    """sqrt(eps) of the Jacobian's dtype: below that relative gap the input's own rounding moves V by more than sqrt(eps)."""
    return math.sqrt(_engine.EPS64 if dtype in (torch.float64, np.float64) else _engine.EPS32)


_PARTS = ("sigma", "perm", "signs", "distance", "flags", "V")


class _Accumulator:
    """Runs the engine chunk by chunk (CPU or CUDA) and gathers the per-sample outputs as tensors."""

    def __init__(self, solver, gram_rcond, ambiguity_tol, return_v, threads, from_decoder: bool):
        self.solver, self.gram_rcond, self.ambiguity_tol = solver, gram_rcond, ambiguity_tol
        self.return_v, self.threads = return_v, threads
        self.from_decoder = from_decoder
        self.parts: list[dict] = []

    @property
    def hint(self) -> str:
        """Errors about non-finite Jacobians point at the decoder when there is one."""
        return "; the decoder's Jacobian is not finite there" if self.from_decoder else ""

    def add(self, J: torch.Tensor, first_index: int) -> None:
        if J.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"Jacobians must be float32 or float64, got {J.dtype}")
        if J.shape[2] > MAX_DIM:
            raise ValueError(f"latent dimension {J.shape[2]} exceeds the supported maximum of {MAX_DIM}")
        n, k = J.shape[1:]
        if n < k and not self.parts:  # once per call
            warnings.warn(f"{n} outputs for {k} latents: at least {k - n} singular values are 0 at every point"
                          + (", so V is not unique there (flagged ambiguous)" if k - n >= 2 else ""),
                          RuntimeWarning, stacklevel=3)
        tol = _default_ambiguity_tol(J.dtype) if self.ambiguity_tol is None else self.ambiguity_tol
        milp = self.solver == "milp"
        run = self._run_cuda if J.is_cuda and _cuda_engine_usable() else self._run_cpu
        part = run(J.detach(), "exact" if milp else self.solver, tol, self.return_v or milp, first_index)
        part["first_index"] = first_index
        if milp:  # the paper's program, on the CPU, replaces the engine's assignment
            _raise_on_nonfinite([part], self.hint)
            from .reference import signed_permutation_milp
            perm, signs, dist = signed_permutation_milp(part["V"].cpu().numpy())
            dev = part["V"].device
            part.update(perm=torch.from_numpy(np.ascontiguousarray(perm, dtype=np.int64)).to(dev),
                        signs=torch.from_numpy(np.ascontiguousarray(signs, dtype=np.int8)).to(dev),
                        distance=torch.from_numpy(np.ascontiguousarray(dist, dtype=np.float64)).to(dev))
            part["flags"] = part["flags"] & (0xFF ^ _engine.FLAG_CERTIFIED)  # the certificate was the engine's
            if not self.return_v:
                part["V"] = None
        self.parts.append(part)

    def _run_cpu(self, J, solver, tol, want_v, first_index) -> dict:
        try:
            out = _engine.dto_from_jacobians(J.cpu().numpy(), solver, self.gram_rcond, tol, want_v,
                                             self.threads or 0, first_index)
        except ValueError as err:
            if "NaN or Inf" not in str(err):
                raise
            raise ValueError(f"{err}{self.hint}") from None
        return {k: None if x is None else torch.from_numpy(x) for k, x in zip(_PARTS, out)}

    def _run_cuda(self, J, solver, tol, want_v, first_index) -> dict:
        """Enqueues the CUDA engine on J's device and current stream; outputs stay on the device."""
        N, n, d = J.shape
        dev = J.device
        with torch.cuda.device(dev):
            def empty(shape, dtype):
                return torch.empty(shape, dtype=dtype, device=dev)
            part = dict(sigma=empty((N, d), torch.float64), perm=empty((N, d), torch.int64),
                        signs=empty((N, d), torch.int8), distance=empty((N,), torch.float64),
                        flags=empty((N,), torch.uint8), V=empty((N, d, d), torch.float64) if want_v else None)
            scratch = empty(_engine.cuda_dto_scratch_bytes(N, n, d, want_v), torch.uint8)
            _engine.cuda_dto_from_jacobians(
                J.data_ptr(), N, n, d, *J.stride(), _DTYPE_NAMES[J.dtype], solver, self.gram_rcond, tol,
                *(part[k].data_ptr() for k in _PARTS[:5]), 0 if part["V"] is None else part["V"].data_ptr(),
                scratch.data_ptr(), scratch.numel(), torch.cuda.current_stream(dev).cuda_stream,
                device=dev.index if dev.index is not None else torch.cuda.current_device())
        return part

    def result(self, active: list[int], device) -> DtOResult:
        cat = {k: None if self.parts[0][k] is None else torch.cat([p[k] for p in self.parts]) for k in _PARTS}
        flags, dist = cat["flags"], cat["distance"]
        # One host synchronisation: the non-finite check (CUDA; the CPU engine raises itself) and the summary.
        summary = torch.stack([((flags & _engine.FLAG_NONFINITE) != 0).any().to(torch.float64),
                               dist.mean(), dist.std(correction=0),
                               (cat["sigma"][:, 0] == 0).sum().to(torch.float64)]).cpu()
        if summary[0] > 0:
            _raise_on_nonfinite(self.parts, self.hint)
        if summary[3] > 0 and len(active) > 1:  # largest singular value 0: J = 0 exactly (d = 1: V = 1 anyway)
            warnings.warn(
                f"{int(summary[3])} of {dist.shape[0]} Jacobians are exactly zero: V is arbitrary there, and "
                "their distance 0 (and their share of the mean) says nothing about alignment"
                + (" (does the decoder detach its output, or use round, argmax or other ops without a "
                   "derivative?)" if self.from_decoder else ""), RuntimeWarning, stacklevel=3)

        def t(x):
            return None if x is None else x.to(device)

        return DtOResult(
            dto=float(summary[1]), std=float(summary[2]), per_sample=t(dist), singular_values=t(cat["sigma"]),
            permutation=t(cat["perm"]), signs=t(cat["signs"]),
            active=torch.tensor(active, dtype=torch.int64, device=device),
            ambiguous=t((flags & _engine.FLAG_AMBIGUOUS) > 0), svd_path=t((flags & _engine.FLAG_SVD_PATH) > 0),
            certified=t((flags & _engine.FLAG_CERTIFIED) > 0), solver=self.solver, V=t(cat["V"]))


def _raise_on_nonfinite(parts: list[dict], hint: str) -> None:
    """Raises for the first sample flagged non-finite, numbered as the caller numbers its samples."""
    for part in parts:
        bad = (part["flags"] & _engine.FLAG_NONFINITE) != 0
        if bool(bad.any()):
            i = part["first_index"] + int(bad.nonzero()[0, 0])
            raise ValueError(_nonfinite_message("J", i) + hint)


def evaluate(decoder, latents: torch.Tensor, *, active=None, solver: str = "exact",
             chunk_size: int | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
             return_v: bool = False, gram_rcond: float = DEFAULT_GRAM_RCOND,
             ambiguity_tol: float | None = None, threads: int | None = None) -> DtOResult:
    """Distance to Orthogonality of ``decoder`` at every latent point.

    Args:
        decoder: callable mapping ``(B, d)`` latents to ``(B, ...)`` outputs (an ``nn.Module`` or a
            function); modules, and the modules behind bound methods such as ``vae.decode``, are
            evaluated in eval mode and their mode is restored afterwards. Samples must not interact
            (each output row depends on its own latent only): a decoder whose output for the first
            latent changes when a second is passed with it (batch statistics, random draws) is refused.
            It runs with ``torch.autocast`` switched off, in its own float32 or float64. TF32 matrix
            products (``torch.set_float32_matmul_precision("high")``, or cuDNN convolutions, TF32 by
            default) stay as the caller set them and put relative errors of about 1e-3 into ``J``: set
            ``"highest"`` and ``torch.backends.cudnn.allow_tf32 = False`` for full float32 Jacobians.
        latents: ``(N, d)`` float tensor (typically posterior means), on the decoder's device and dtype.
        active: which latent axes enter the Jacobian. ``None``: all. ``"auto"``: the paper's rule, axes
            whose standard deviation over ``latents`` exceeds 0.5. Or a boolean mask of length ``d``, or
            a list/tensor of distinct integer indices (uint8 is refused: an old-style mask or indices?).
        solver: ``"exact"`` (certified greedy, else exact Hungarian assignment), ``"greedy"``
            (approximate: largest-entry-first where the certificate fails; an upper bound on DtO), or
            ``"milp"`` (the paper's L1 mixed-integer program solved by HiGHS per sample; slow, for
            cross-checks).
        chunk_size: latents per Jacobian chunk; by default derived from ``memory_budget``.
        memory_budget: approximate working memory per chunk in bytes (default 512 MiB): the Jacobians
            and the decoder's intermediate results (measured on calls with one and two latents), each
            with its tangents. Memory use is bounded by the chunk, never by ``N``.
        return_v: also return the right singular vectors ``V`` (``(N, k, k)``).
        gram_rcond: samples the Gram route could resolve only to worse than ``eps64 / gram_rcond^2`` are
            recomputed on ``J`` by QR plus one-sided Jacobi: ``sigma_min / sigma_max`` below this, or two
            singular values that count as distinct (see ``ambiguity_tol``) with ``sigma_k^2 - sigma_k+1^2``
            at most ``gram_rcond^2 sigma_max^2``, unless ``J`` with unit columns is well enough conditioned
            for Jacobi's relative accuracy (see the module docstring). Default ``eps64**0.25 ~= 1.2e-4``;
            ``1.0`` forces the recomputation for every sample with more than one latent (with one,
            ``V = [1]`` exactly), ``0`` never. Samples whose Gram
            matrix would under- or overflow float64 (``J`` of scale below about 1e-135 or above 1e150)
            always take that path, on ``J`` scaled by a power of two.
        ambiguity_tol: relative singular-value gap at or below which ``V`` counts as not unique
            (``ambiguous``); default ``sqrt(eps)`` of the Jacobian's dtype.
        threads: CPU engine threads, 1 to 1024 (default: OpenMP's default; never more than there are
            samples; unused when the GPU engine runs).

    Returns:
        :class:`DtOResult` with tensors on ``latents.device``. On a CUDA device the CUDA engine runs when
        it was compiled in (see the module docstring); otherwise Jacobians are copied to the CPU engine.

    Warns:
        RuntimeWarning: when Jacobians are exactly zero (a decoder that detaches its output or rounds
        it, or ReLU units all off): ``V`` is arbitrary there, and their distance 0 means nothing.
    """
    gram_rcond, ambiguity_tol, threads = _check_options(solver, gram_rcond, ambiguity_tol, return_v, threads)
    latents = _check_latents(latents)
    d = latents.shape[1]
    if d > MAX_DIM:
        raise ValueError(f"latents has d = {d} dimensions; the supported maximum is {MAX_DIM}")
    columns = _resolve_active(active, d, latents)
    acc = _Accumulator(solver, gram_rcond, ambiguity_tol, return_v, threads, from_decoder=True)
    for start, J in iter_jacobian_chunks(decoder, latents, columns, chunk_size=chunk_size,
                                         memory_budget=memory_budget):
        acc.add(J, start)
        del J  # or the chunk stays alive while the next one is computed: twice the memory
    return acc.result(columns, latents.device)


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f" or x.dtype.fields is not None or x.dtype.itemsize not in (4, 8):
            raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
        # torch views only native byte order, non-negative strides (not a[::-1]) and strides in whole
        # items (not a field of a structured array): only other arrays are copied.
        if (not x.dtype.isnative or any(s < 0 or s % x.itemsize for s in x.strides)):
            x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    _check_dense(x, name)
    return x.detach()


def dto_from_jacobians(J, *, active=None, solver: str = "exact", return_v: bool = False,
                       gram_rcond: float = DEFAULT_GRAM_RCOND, ambiguity_tol: float | None = None,
                       chunk_size: int = 65536, threads: int | None = None) -> DtOResult:
    """DtO from precomputed Jacobians ``J`` of shape ``(N, n, d)`` (or ``(n, d)`` for one sample).

    Options as in :func:`evaluate`; ``active`` takes a mask or indices (``"auto"`` needs latents, so it is
    not available here). Any strides are accepted; float32 or float64.
    """
    gram_rcond, ambiguity_tol, threads = _check_options(solver, gram_rcond, ambiguity_tol, return_v, threads)
    J = _as_tensor(J, "J")
    if J.ndim == 2:
        J = J[None]
    if J.ndim != 3:
        raise ValueError(f"J must have shape (N, n, d) or (n, d), got shape {tuple(J.shape)}")
    if min(J.shape) == 0:
        raise ValueError(f"J is empty (shape {tuple(J.shape)}); every dimension must be >= 1")
    if J.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"J must be float32 or float64, got {J.dtype}")
    d = J.shape[2]
    if d > MAX_DIM:
        raise ValueError(f"J has d = {d} latent dimensions; the supported maximum is {MAX_DIM}")
    if not (_is_integer(chunk_size) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    columns = _resolve_active(active, d, None)
    if columns != list(range(d)):  # a subset, or all latents in another order
        J = J[:, :, columns]
    acc = _Accumulator(solver, gram_rcond, ambiguity_tol, return_v, threads, from_decoder=False)
    for start in range(0, J.shape[0], chunk_size):
        acc.add(J[start:start + chunk_size], start)
    return acc.result(columns, J.device)


def nearest_signed_permutation(V, *, solver: str = "exact", threads: int | None = None) -> SignedPermutation:
    """Nearest signed permutation matrices (L1 sense) of ``V``: ``(N, d, d)`` or ``(d, d)``.

    For orthogonal ``V`` (e.g. from an SVD) this is also the Frobenius-nearest one. Solvers as in
    :func:`evaluate`. Results are on ``V``'s device.
    """
    _check_solver(solver)
    threads = _check_threads(threads)
    V = _as_tensor(V, "V")
    single = V.ndim == 2
    if single:
        V = V[None]
    if V.ndim != 3 or V.shape[1] != V.shape[2]:
        raise ValueError(f"V must have shape (N, d, d) or (d, d) with square matrices, got {tuple(V.shape)}")
    if min(V.shape) == 0:
        raise ValueError(f"V is empty (shape {tuple(V.shape)})")
    if V.shape[1] > MAX_DIM:
        raise ValueError(f"V is {V.shape[1]} x {V.shape[1]}; the supported maximum is {MAX_DIM}")
    if V.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"V must be float32 or float64, got {V.dtype}")
    device = V.device
    if V.is_cuda and solver != "milp" and _cuda_engine_usable():
        return _nearest_signed_permutation_cuda(V, solver, single)
    array = V.cpu().numpy()
    if solver == "milp":
        if not np.isfinite(array).all():
            raise ValueError("V contains NaN or Inf")
        from .reference import signed_permutation_milp
        perm, signs, dist = signed_permutation_milp(array.astype(np.float64))
        certified = np.zeros(len(dist), dtype=bool)
    else:
        perm, signs, dist, flags = _engine.signed_permutations(array, solver, threads or 0)
        certified = (flags & _engine.FLAG_CERTIFIED) > 0
    out = [torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in  # no copies of the engine's arrays
           (perm.astype(np.int64, copy=False), signs.astype(np.int8, copy=False),
            np.asarray(dist, dtype=np.float64), certified)]
    if single:
        out = [x[0] for x in out]
    return SignedPermutation(*out)


def _nearest_signed_permutation_cuda(V: torch.Tensor, solver: str, single: bool) -> SignedPermutation:
    """The CUDA engine on V's device and current stream; one host synchronisation (the flags)."""
    N, d, _ = V.shape
    dev = V.device
    with torch.cuda.device(dev):
        perm = torch.empty((N, d), dtype=torch.int64, device=dev)
        signs = torch.empty((N, d), dtype=torch.int8, device=dev)
        dist = torch.empty((N,), dtype=torch.float64, device=dev)
        flags = torch.empty((N,), dtype=torch.uint8, device=dev)
        scratch = torch.empty(_engine.cuda_signed_permutations_scratch_bytes(N, d), dtype=torch.uint8, device=dev)
        _engine.cuda_signed_permutations(
            V.data_ptr(), N, d, *V.stride(), _DTYPE_NAMES[V.dtype], solver, perm.data_ptr(), signs.data_ptr(),
            dist.data_ptr(), flags.data_ptr(), scratch.data_ptr(), scratch.numel(),
            torch.cuda.current_stream(dev).cuda_stream,
            device=dev.index if dev.index is not None else torch.cuda.current_device())
    bad = (flags & _engine.FLAG_NONFINITE) != 0
    if bool(bad.any()):
        raise ValueError(_nonfinite_message("V", int(bad.nonzero()[0, 0])))
    out = [perm, signs, dist, (flags & _engine.FLAG_CERTIFIED) > 0]
    if single:
        out = [x[0] for x in out]
    return SignedPermutation(*out)
