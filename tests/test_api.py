"""Jacobians through autodiff, evaluate() end to end, and every kind of bad input."""


import copy
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import fastdto
from fastdto import reference


class WithNorms(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1 = torch.nn.Linear(3, 16)
        self.bn = torch.nn.BatchNorm1d(16)
        self.drop = torch.nn.Dropout(0.5)
        self.lin2 = torch.nn.Linear(16, 2 * 5 * 5)

    def forward(self, z):
        h = self.drop(torch.tanh(self.bn(self.lin1(z))))
        return self.lin2(h).reshape(-1, 2, 5, 5)  # image-shaped output


def test_jacobians_match_the_per_sample_loop(mlp_decoder):
    z = torch.randn(13, 4)
    J = fastdto.jacobians(mlp_decoder, z, chunk_size=5)
    assert J.shape == (13, 60, 4) and J.dtype == torch.float32
    np.testing.assert_allclose(J.numpy(), reference.jacobians_loop(mlp_decoder, z), atol=1e-5)


def test_batchnorm_dropout_image_outputs_and_mode_restored():
    torch.manual_seed(1)
    dec = WithNorms().double()
    dec.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            dec(torch.randn(64, 3, dtype=torch.float64) * 2 + 1)
    z = torch.randn(9, 3, dtype=torch.float64)
    J = fastdto.jacobians(dec, z)
    assert dec.training and dec.bn.training and dec.drop.training
    dec.eval()
    np.testing.assert_allclose(J.numpy(), reference.jacobians_loop(dec, z), atol=1e-12)
    res = fastdto.evaluate(dec, z)
    ref = reference.dto_reference(J.numpy())
    np.testing.assert_allclose(res.per_sample.numpy(), ref["per_sample"], atol=1e-10)


def test_plain_function_and_float64():
    W = torch.randn(30, 3, dtype=torch.float64)
    f = lambda z: torch.sin(z @ W.T)
    z = torch.randn(8, 3, dtype=torch.float64)
    J = fastdto.jacobians(f, z)
    expected = torch.cos(z @ W.T)[:, :, None] * W[None]
    torch.testing.assert_close(J, expected)


def test_evaluate_equals_dto_from_jacobians_in_chunks(mlp_decoder):
    z = torch.randn(50, 4)
    a = fastdto.evaluate(mlp_decoder, z, chunk_size=7, return_v=True)
    b = fastdto.dto_from_jacobians(fastdto.jacobians(mlp_decoder, z), return_v=True)
    # float32 Jacobians of different chunk sizes differ in the last bits (blocked matmuls)
    torch.testing.assert_close(a.per_sample, b.per_sample, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.V, b.V, atol=1e-5, rtol=0)
    assert a.permutation.shape == (50, 4) and a.V.shape == (50, 4, 4)
    c = fastdto.evaluate(mlp_decoder, z, memory_budget=10_000)  # tiny budget: one latent per chunk
    torch.testing.assert_close(a.per_sample, c.per_sample, atol=1e-5, rtol=0)


def test_solvers_agree_on_the_decoder(mlp_decoder):
    z = torch.randn(12, 4)
    exact = fastdto.evaluate(mlp_decoder, z)
    milp = fastdto.evaluate(mlp_decoder, z, solver="milp")
    greedy = fastdto.evaluate(mlp_decoder, z, solver="greedy")
    torch.testing.assert_close(exact.per_sample, milp.per_sample, atol=1e-9, rtol=0)
    assert (greedy.per_sample >= exact.per_sample - 1e-12).all()


def test_active_auto_and_indices(mlp_decoder):
    z = torch.randn(200, 4)
    z[:, 1] *= 0.1  # passive: std 0.1 < 0.5
    res = fastdto.evaluate(mlp_decoder, z, active="auto")
    assert res.active.tolist() == [0, 2, 3] and res.singular_values.shape == (200, 3)
    J = fastdto.jacobians(mlp_decoder, z)[:, :, [0, 2, 3]]
    torch.testing.assert_close(res.per_sample, fastdto.dto_from_jacobians(J).per_sample)
    torch.testing.assert_close(fastdto.evaluate(mlp_decoder, z, active=torch.tensor([0, 2, 3])).per_sample,
                               res.per_sample)
    with pytest.raises(ValueError, match="no active latent"):
        fastdto.evaluate(mlp_decoder, z * 0.01, active="auto")


class Square(torch.autograd.Function):  # old-style Function: no jvp, no vmap support
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_missing_forward_rule_falls_back_to_exact_double_vjp(mlp_decoder):
    f = lambda z: Square.apply(mlp_decoder(z))
    z = torch.randn(6, 4)
    with pytest.warns(RuntimeWarning, match="double-vjp"):
        J = fastdto.jacobians(f, z)
    np.testing.assert_allclose(J.numpy(), reference.jacobians_loop(f, z), atol=1e-5)


class OpaqueTanh(torch.autograd.Function):  # no jvp; a correct backward that autograd cannot see into
    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return torch.from_numpy(g.detach().numpy() * (1 - y.detach().numpy() ** 2))  # as C++/CUDA ops do


def test_fallbacks_stay_exact_where_double_vjp_cannot_be(mlp_decoder):
    """Double-vjp differentiates backward passes. An op whose backward autograd cannot see into made it
    drop that op's part of J silently (DtO 1.24 instead of 1.41); one without a second derivative
    (cdist) raised. Both now go on to reverse mode, one pass per output, exact."""
    torch.manual_seed(1)
    A, B = torch.nn.Linear(4, 16), torch.nn.Linear(4, 16)
    centers, W = torch.randn(16, 4), torch.randn(16, 20)
    decoders = [lambda z: torch.tanh(A(z)) + OpaqueTanh.apply(B(z)),  # noqa: E731
                lambda z: torch.exp(-torch.cdist(z, centers) ** 2) @ W]  # noqa: E731
    z = torch.randn(7, 4)
    for f in decoders:
        with pytest.warns(RuntimeWarning) as record:
            J = fastdto.jacobians(f, z, chunk_size=3)
        messages = " ".join(str(w.message) for w in record)
        assert "double-vjp" in messages and "reverse mode" in messages
        np.testing.assert_allclose(J.numpy(), reference.jacobians_loop(f, z), rtol=1e-5, atol=1e-6)
    with pytest.warns(RuntimeWarning) as record:  # where double-vjp is exact, it still runs
        fastdto.jacobians(lambda z: Square.apply(mlp_decoder(z)), z)
    assert not any("reverse mode" in str(w.message) for w in record)
    state = torch.get_rng_state()
    with pytest.warns(RuntimeWarning):
        fastdto.jacobians(decoders[0], z)
    assert torch.equal(torch.get_rng_state(), state)  # the check's random projection has its own generator


def test_decoder_writing_to_its_input_sees_each_latent_once(mlp_decoder):
    """The memory probe used views of the caller's latents: an in-place decoder ran 3 times on row 0.
    The chunks were views too, so such a decoder changed the caller's latents, and a fallback method
    retried a chunk the failed forward-mode attempt had already changed (J at 2z, not z, below)."""
    def dec(q):
        q.add_(1.0)
        return torch.cat([q, q ** 2], 1)
    ones = torch.ones(5, 2)
    res = fastdto.evaluate(dec, ones)
    assert torch.equal(res.singular_values, res.singular_values[:1].expand(5, 2))
    assert torch.equal(ones, torch.ones(5, 2))

    z = torch.randn(7, 4)
    z0 = z.clone()
    for plain, in_place in [(lambda x: mlp_decoder(2 * x), lambda x: mlp_decoder(x.mul_(2))),
                            (lambda x: Square.apply(mlp_decoder(2 * x)),  # the double-vjp fallback
                             lambda x: Square.apply(mlp_decoder(x.mul_(2))))]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = fastdto.jacobians(plain, z, chunk_size=3)
            torch.testing.assert_close(fastdto.jacobians(in_place, z, chunk_size=3), expected, rtol=0, atol=0)
            fastdto.evaluate(in_place, z)
        assert torch.equal(z, z0)


def test_small_chunks_keep_memory_bounded():
    """Chunks under 16 MiB never trimmed glibc's heap, and it fragmented: resident memory grew with N
    (282 / 659 / 1229 MB at N = 1000 / 2000 / 4000 with an 8 MiB budget)."""
    code = textwrap.dedent("""
        import resource, sys, torch, fastdto
        torch.manual_seed(0)
        dec = torch.nn.Sequential(torch.nn.Linear(10, 256), torch.nn.Tanh(), torch.nn.Linear(256, 4096))
        z = torch.randn(4000, 10)
        fastdto.evaluate(dec, z[:4], threads=1)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fastdto.evaluate(dec, z, memory_budget=8 << 20, threads=1)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout) < 150  # MB; was 1229


def test_chunk_options_take_numpy_integers_and_refuse_bools(mlp_decoder):
    z = torch.randn(9, 4)
    a = fastdto.evaluate(mlp_decoder, z, chunk_size=np.int64(4))
    torch.testing.assert_close(a.per_sample, fastdto.evaluate(mlp_decoder, z).per_sample)
    with pytest.raises(ValueError, match="chunk_size"):
        fastdto.evaluate(mlp_decoder, z, chunk_size=True)
    with pytest.raises(ValueError, match="memory_budget"):
        fastdto.evaluate(mlp_decoder, z, memory_budget=True)


def test_results_on_latents_device_and_types(mlp_decoder):
    res = fastdto.evaluate(mlp_decoder, torch.randn(5, 4))
    for t in (res.per_sample, res.singular_values, res.permutation, res.signs, res.ambiguous):
        assert t.device == torch.device("cpu")
    assert isinstance(res.dto, float) and isinstance(res.std, float)


# ----------------------------------------------------------------------------- bad input

def test_bad_latents(mlp_decoder):
    with pytest.raises(ValueError, match="NaN or Inf"):
        fastdto.evaluate(mlp_decoder, torch.tensor([[0.0, float("nan"), 0, 0]]))
    with pytest.raises(ValueError, match=r"shape \(N, d\), got shape \(4,\); for one point pass latents\[None\]"):
        fastdto.evaluate(mlp_decoder, torch.randn(4))
    with pytest.raises(ValueError, match="empty"):
        fastdto.evaluate(mlp_decoder, torch.randn(0, 4))
    with pytest.raises(ValueError, match="d = 0"):
        fastdto.evaluate(lambda z: z, torch.randn(3, 0))
    with pytest.raises(TypeError, match="torch.Tensor of shape .* got ndarray; convert with torch.from_numpy"):
        fastdto.evaluate(mlp_decoder, np.zeros((3, 4)))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastdto.evaluate(mlp_decoder, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="pass latents.to"):
        fastdto.evaluate(mlp_decoder, torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="supported maximum"):
        fastdto.evaluate(lambda z: z, torch.randn(3, 65))


def test_bad_decoders():
    z = torch.randn(5, 3)
    with pytest.raises(ValueError, match="batch dimension"):
        fastdto.evaluate(lambda z: z.sum(0), z)
    with pytest.raises(ValueError, match="batch dimension"):
        fastdto.evaluate(lambda z: z[:1], z)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fastdto.evaluate(lambda z: z / 0.0, z)
    with pytest.raises(ValueError, match="not finite"):  # finite output, infinite derivative
        fastdto.evaluate(lambda z: torch.sqrt(z.abs() * 0), z)
    with pytest.raises(TypeError, match="callable"):
        fastdto.evaluate("decoder", z)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fastdto.evaluate(lambda z: z.numpy(), z)


def test_bad_options(mlp_decoder):
    z = torch.randn(5, 4)
    with pytest.raises(ValueError, match="solver"):
        fastdto.evaluate(mlp_decoder, z, solver="hungarian")
    with pytest.raises(ValueError, match="active"):
        fastdto.evaluate(mlp_decoder, z, active="all")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        fastdto.evaluate(mlp_decoder, z, active=[0, 7])
    with pytest.raises(ValueError, match="distinct"):
        fastdto.evaluate(mlp_decoder, z, active=[1, 1])
    with pytest.raises(ValueError, match="mask"):
        fastdto.evaluate(mlp_decoder, z, active=np.array([True, False]))
    # An old-style uint8 mask of latent 0 out of 2: as indices [1, 0] it would silently select both.
    for uint8_mask in (torch.tensor([1, 0], dtype=torch.uint8), np.array([1, 0], dtype=np.uint8)):
        with pytest.raises(ValueError, match="uint8 is ambiguous"):
            fastdto.dto_from_jacobians(torch.randn(3, 6, 2), active=uint8_mask)
    with pytest.raises(ValueError, match="gram_rcond"):
        fastdto.evaluate(mlp_decoder, z, gram_rcond=2.0)
    with pytest.raises(ValueError, match="ambiguity_tol"):
        fastdto.evaluate(mlp_decoder, z, ambiguity_tol=-1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        fastdto.evaluate(mlp_decoder, z, chunk_size=0)
    with pytest.raises(ValueError, match="memory_budget"):
        fastdto.evaluate(mlp_decoder, z, memory_budget=-5)
    for bad in (0, -1, 1025, 100_000, True, 2.5):
        with pytest.raises(ValueError, match="threads"):
            fastdto.evaluate(mlp_decoder, z, threads=bad)
        with pytest.raises(ValueError, match="threads"):
            fastdto.nearest_signed_permutation(np.eye(3), threads=bad)
    assert fastdto.evaluate(mlp_decoder, z, threads=1024).per_sample.shape == (5,)  # team of 2, not 1024


def test_bad_jacobians_and_V():
    with pytest.raises(ValueError, match=r"J\[1\] contains NaN"):
        J = np.ones((3, 4, 2))
        J[1, 2, 0] = np.inf
        fastdto.dto_from_jacobians(J)
    with pytest.raises(ValueError, match=r"J\[70001\] contains NaN"):  # index in the caller's numbering
        J = np.zeros((70002, 2, 1), dtype=np.float32)
        J[70001, 0, 0] = np.nan
        fastdto.dto_from_jacobians(J)
    with pytest.raises(ValueError, match="shape"):
        fastdto.dto_from_jacobians(np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        fastdto.dto_from_jacobians(np.ones((0, 3, 2)))
    with pytest.raises(ValueError, match="supported maximum"):
        fastdto.dto_from_jacobians(np.ones((1, 70, 65)))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastdto.dto_from_jacobians(np.ones((1, 3, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="'auto' needs the latents"):
        fastdto.dto_from_jacobians(np.ones((1, 3, 2)), active="auto")
    with pytest.raises(ValueError, match="square"):
        fastdto.nearest_signed_permutation(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        fastdto.nearest_signed_permutation(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        fastdto.nearest_signed_permutation(np.full((3, 3), np.nan), solver="milp")
    with pytest.raises(ValueError, match="supported maximum"):
        fastdto.nearest_signed_permutation(np.eye(65))
    with pytest.raises(TypeError, match="numpy array"):
        fastdto.nearest_signed_permutation([[1.0]])


def test_engine_validates_on_its_own():
    """The compiled module rejects bad buffers even when called directly, bypassing the Python layer."""
    import _fastdto_engine as engine
    with pytest.raises(TypeError, match="float32 or float64"):
        engine.dto_from_jacobians(np.ones((1, 3, 2), dtype=np.int64), "exact", 1e-4, 1e-6, False)
    with pytest.raises(ValueError, match="ndim"):
        engine.dto_from_jacobians(np.ones((3, 2)), "exact", 1e-4, 1e-6, False)
    with pytest.raises(ValueError, match="empty"):
        engine.dto_from_jacobians(np.ones((1, 0, 2)), "exact", 1e-4, 1e-6, False)
    with pytest.raises(ValueError, match="maximum"):
        engine.dto_from_jacobians(np.ones((1, 3, 65)), "exact", 1e-4, 1e-6, False)
    with pytest.raises(ValueError, match="solver"):
        engine.dto_from_jacobians(np.ones((1, 3, 2)), "milp", 1e-4, 1e-6, False)
    with pytest.raises(ValueError, match="gram_rcond"):
        engine.dto_from_jacobians(np.ones((1, 3, 2)), "exact", float("nan"), 1e-6, False)
    with pytest.raises(ValueError, match="square"):
        engine.signed_permutations(np.ones((1, 3, 2)), "exact")
    with pytest.raises(TypeError, match="float32 or float64"):
        engine.signed_permutations(np.ones((1, 2, 2), dtype=">f8"), "exact")
    with pytest.raises(ValueError, match="threads"):
        engine.signed_permutations(np.ones((1, 2, 2)), "exact", 100_000)  # crashed inside libgomp
    with pytest.raises(ValueError, match="threads"):
        engine.dto_from_jacobians(np.ones((1, 3, 2)), "exact", 1e-4, 1e-6, False, -2)
    with pytest.raises(ValueError, match="first_index"):
        engine.dto_from_jacobians(np.ones((1, 3, 2)), "exact", 1e-4, 1e-6, False, 0, -1)


def test_engine_releases_the_gil():
    """Python threads keep running while the engine computes (the binding drops the GIL)."""
    import threading
    import time

    J = np.random.default_rng(0).standard_normal((1000, 2048, 10)).astype(np.float32)
    done = threading.Event()
    t0 = time.perf_counter()
    fastdto.dto_from_jacobians(J, threads=1)
    alone = time.perf_counter() - t0

    def work():
        fastdto.dto_from_jacobians(J, threads=1)
        done.set()

    ticks = 0
    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)  # a Python-level step that needs the GIL
    worker.join()
    # With the GIL held for the whole call the loop could not advance until the engine returned
    # (a tick or two at most, before and after it).
    assert ticks > 20, (ticks, alone)


def test_jacobian_chunks_do_not_outlive_their_turn(mlp_decoder):
    """Only one chunk of Jacobians is alive at a time: while chunk k is computed, chunk k - 1 is gone
    (the consumer and the generator both dropped it), so memory is bounded by one chunk, not two."""
    import weakref

    from fastdto.jacobian import iter_jacobian_chunks

    refs, alive_during_next = [], []

    def decoder(z):  # runs while a chunk is being computed
        alive_during_next.append(sum(r() is not None for r in refs))
        return mlp_decoder(z)

    z = torch.randn(20, 4)
    for start, J in iter_jacobian_chunks(decoder, z, chunk_size=4):
        refs.append(weakref.ref(J._base if J._base is not None else J))
        del J
    assert len(refs) == 5
    assert max(alive_during_next) == 0, alive_during_next


def test_chunks_leave_room_for_the_decoders_activations():
    """A decoder much wider inside than at its output: chunks are sized from the activations its
    operations produce (each carried with d tangents), not from the output alone."""
    from fastdto.jacobian import iter_jacobian_chunks

    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(4, 4096), torch.nn.Tanh(), torch.nn.Linear(4096, 3))
    budget = 8 * 2**20
    sizes = [J.shape[0] for _, J in iter_jacobian_chunks(dec, torch.randn(500, 4), memory_budget=budget)]
    hidden_bytes = 2 * 4096 * 4  # the linear layer's and the tanh's outputs, float32
    assert max(sizes) * 5 * hidden_bytes <= budget  # 5 = primal + 4 tangents
    assert max(sizes) >= budget // (5 * 4 * hidden_bytes)  # not absurdly small either


def test_bound_method_decoders_run_in_eval_mode():
    """vae.decode (a bound method) gets the same treatment as the module: eval mode, buffers untouched."""
    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(),
                                           torch.nn.Linear(16, 20))

        def decode(self, z):
            return self.dec(z)

    torch.manual_seed(0)
    vae = VAE()
    vae.train()
    with torch.no_grad():
        vae.dec(torch.randn(64, 3) * 3)  # non-trivial running statistics
    running = vae.dec[1].running_mean.clone()
    z = torch.randn(12, 3)
    a = fastdto.evaluate(vae.decode, z)
    b = fastdto.evaluate(vae.decode, z, chunk_size=5)
    c = fastdto.evaluate(vae.dec, z)
    assert a.dto == pytest.approx(c.dto, rel=1e-6) and b.dto == pytest.approx(c.dto, rel=1e-6)  # float32 chunks
    assert torch.equal(vae.dec[1].running_mean, running) and vae.training and vae.dec[1].training


def test_odd_latents_and_inference_mode(mlp_decoder):
    """Expanded (zero-stride) latents, inference tensors and inference mode, on both Jacobian paths."""
    z = torch.randn(6, 4)
    ref = fastdto.evaluate(mlp_decoder, z).per_sample
    expanded = z[:1].expand(6, 4)
    torch.testing.assert_close(fastdto.evaluate(mlp_decoder, expanded).per_sample, ref[:1].expand(6), rtol=0, atol=1e-5)

    f = lambda z: Square.apply(mlp_decoder(z))  # noqa: E731  (the double-vjp path)
    with pytest.warns(RuntimeWarning, match="double-vjp"):
        base = fastdto.evaluate(f, z).per_sample
    with torch.inference_mode():
        zi = z.clone()
    for run in (lambda: fastdto.evaluate(f, zi), lambda: fastdto.evaluate(f, z)):
        with pytest.warns(RuntimeWarning, match="double-vjp"), torch.inference_mode():
            torch.testing.assert_close(run().per_sample, base)


def test_dto_from_jacobians_follows_the_order_of_active(rng):
    J = torch.from_numpy(rng.standard_normal((5, 30, 3)))
    order = [2, 0, 1]
    res = fastdto.dto_from_jacobians(J, active=order, return_v=True)
    ref = fastdto.dto_from_jacobians(J[:, :, order], return_v=True)
    for name in ("permutation", "signs", "V", "per_sample"):
        assert torch.equal(getattr(res, name), getattr(ref, name)), name
    assert res.active.tolist() == order


def test_more_inputs_and_clear_messages(rng, mlp_decoder):
    J = rng.standard_normal((3, 20, 4))
    flipped = J[:, ::-1]  # negative strides: copied, not refused
    torch.testing.assert_close(fastdto.dto_from_jacobians(flipped).per_sample,
                               fastdto.dto_from_jacobians(np.ascontiguousarray(flipped)).per_sample, rtol=0, atol=0)
    for bad in (0, -1, None, 2.5):
        with pytest.raises(ValueError, match="chunk_size"):
            fastdto.dto_from_jacobians(J, chunk_size=bad)
    with pytest.raises(ValueError, match="selects no latent"):
        fastdto.dto_from_jacobians(J, active=[])
    with pytest.raises(ValueError, match="active='auto' needs at least 2"):
        fastdto.evaluate(mlp_decoder, torch.randn(1, 4), active="auto")
    with pytest.raises(ValueError, match="finite"):
        fastdto.evaluate(mlp_decoder, torch.randn(3, 4), memory_budget=float("inf"))
    huge = torch.zeros(1, 1, 2).expand(1, 2**25, 2)  # no memory behind it
    with pytest.raises(ValueError, match="exceed the supported maximum") as info:
        fastdto.dto_from_jacobians(huge)
    assert "not finite" not in str(info.value)
    nan = J.copy()
    nan[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN") as info:
        fastdto.dto_from_jacobians(nan)
    assert "decoder" not in str(info.value)  # no decoder involved here
    milp = fastdto.evaluate(mlp_decoder, torch.randn(3, 4), solver="milp")
    assert not milp.certified.any()  # the engine's certificate says nothing about the MILP's answer


def test_option_types_are_checked_alike(rng):
    """evaluate and dto_from_jacobians share one check: NumPy scalars are numbers, 1 is not a bool."""
    J = rng.standard_normal((2, 5, 3))
    a = fastdto.dto_from_jacobians(J, gram_rcond=np.float32(0.5), ambiguity_tol=np.float64(1e-9))
    b = fastdto.dto_from_jacobians(J, gram_rcond=0.5, ambiguity_tol=1e-9)
    torch.testing.assert_close(a.per_sample, b.per_sample, rtol=0, atol=0)
    for bad in (True, "0.1"):
        with pytest.raises(ValueError, match="gram_rcond"):
            fastdto.dto_from_jacobians(J, gram_rcond=bad)
    with pytest.raises(TypeError, match="return_v"):
        fastdto.dto_from_jacobians(J, return_v=1)


def test_inputs_found_by_fuzzing(rng, mlp_decoder):
    """Inputs that leaked torch's or NumPy's messages, were refused late, or were refused wrongly."""
    J = rng.standard_normal((3, 12, 4))
    expected = fastdto.dto_from_jacobians(J).per_sample
    swapped = J.astype(">f8")  # valid float64 in the other byte order
    fields = np.zeros(J.shape, dtype=[("a", "f8"), ("b", "f4")])
    fields["a"] = J  # a field view: strides in bytes, not whole items
    for same in (swapped, fields["a"]):
        torch.testing.assert_close(fastdto.dto_from_jacobians(same).per_sample, expected, rtol=0, atol=0)
    for bad in (J.astype(object), J.astype(np.longdouble)):
        with pytest.raises(TypeError, match="^J must be float32 or float64"):
            fastdto.dto_from_jacobians(bad)
    for bad, message in ((torch.zeros(3, 12, 4, device="meta"), "^V is a meta tensor"),
                         (torch.from_numpy(J[:, :4]).to_sparse(), "^V must be a dense tensor")):
        with pytest.raises(ValueError, match=message):
            fastdto.nearest_signed_permutation(bad)
    # NumPy integers are integers; numpy bools are not
    torch.testing.assert_close(fastdto.dto_from_jacobians(J, chunk_size=np.int64(2), threads=np.int32(1)).per_sample,
                               expected, rtol=0, atol=0)
    assert fastdto.nearest_signed_permutation(np.eye(3), threads=np.int64(2)).distance == 0.0
    with pytest.raises(ValueError, match="threads"):
        fastdto.dto_from_jacobians(J, threads=np.bool_(True))

    calls = []

    def counting(z):
        calls.append(z.shape)
        return mlp_decoder(z)
    for bad in (torch.randn(5, 4).half(), torch.randn(5, 4).bfloat16()):  # refused before the decoder runs
        with pytest.raises(TypeError, match="^latents must be float32 or float64"):
            fastdto.evaluate(counting, bad)
    assert not calls
    for bad, message in ((torch.zeros(5, 4, device="meta"), "^latents is a meta tensor"),
                         (torch.randn(5, 4).to_sparse(), "^latents must be a dense tensor")):
        with pytest.raises(ValueError, match=message):
            fastdto.evaluate(mlp_decoder, bad)
    with pytest.raises(TypeError, match=r"must return a torch.Tensor, got tuple: wrap it .*decode\(z\)\[0\]"):
        fastdto.evaluate(lambda z: (mlp_decoder(z), z), torch.randn(5, 4))
    with pytest.raises(TypeError, match="float32 or float64 outputs"):  # named the Jacobians, after a chunk
        fastdto.evaluate(lambda z: mlp_decoder(z).half(), torch.randn(5, 4))
    for bad in ({1}, [None], [1.0], [0, 10**30], slice(2)):  # leaked NumPy's conversion errors
        with pytest.raises(ValueError, match="^active must be a boolean mask"):
            fastdto.evaluate(mlp_decoder, torch.randn(5, 4), active=bad)
    with pytest.warns(RuntimeWarning, match="5 of 5 Jacobians are exactly zero.*detach"):
        res = fastdto.evaluate(lambda z: mlp_decoder(z).detach(), torch.randn(5, 4))
    assert res.dto == 0.0


def test_autocast_is_switched_off_and_half_precision_decoders_get_a_way_out(rng):
    """Under a caller's autocast the decoder used to run in bfloat16 and evaluate refused its outputs;
    a bfloat16 decoder got 'pass latents.to(torch.bfloat16)', which the latents check then refused."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    dec = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 50))
    z = torch.randn(20, 4, generator=gen)
    plain = fastdto.evaluate(dec, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = fastdto.evaluate(dec, z)
        assert fastdto.jacobians(dec, z).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")  # the caller's setting is back
    torch.testing.assert_close(inside.per_sample, plain.per_sample, rtol=0, atol=0)
    for half in (torch.bfloat16, torch.float16):
        for decoder, latents in ((copy.deepcopy(dec).to(half), z), (dec, z.to(half))):
            with pytest.raises(TypeError, match=r"copy.deepcopy\(decoder\).float\(\)"):
                fastdto.evaluate(decoder, latents)


def test_out_of_memory_in_the_engine_raises_memory_error():
    """std::bad_alloc inside the engine's OpenMP team (here the SVD path's float64 copy of a huge
    stride-0 J) used to end in std::terminate, killing the interpreter."""
    code = textwrap.dedent("""
        import os, resource, torch, fastdto
        J = torch.randn(1, 1, 8, dtype=torch.float64).expand(2, 4_000_000, 8)  # rank 1: SVD path
        vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + 128 * 2**20, resource.RLIM_INFINITY))
        try:
            fastdto.dto_from_jacobians(J, threads=2)
        except MemoryError:
            print("MemoryError")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "MemoryError", proc.stderr[-2000:]


def test_random_decoders_and_first_call_errors_are_explained(rng):
    """Found by using the package as a new user would: a lambda around a model in training mode drew new
    Dropout masks on every call (a different DtO each time, under a warning that promised exact
    Jacobians), and errors of the first, sizing call named shapes the caller never passed."""
    torch.manual_seed(int(rng.integers(2**31)))
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 20))
    z = torch.randn(20, 4)
    with pytest.raises(ValueError, match=r"draws random numbers.*model\.eval\(\)"):
        fastdto.evaluate(lambda x: model(x), z)
    assert model.training
    a, b = fastdto.evaluate(model, z), fastdto.evaluate(model, z)  # the module itself runs in eval mode
    assert a.dto == b.dto and model.training
    with pytest.raises(RuntimeError) as info:  # the decoder's own error, with where it was raised
        fastdto.evaluate(model, torch.randn(5, 6))
    assert any("first 1 of the latents (shape (1, 6))" in n for n in info.value.__notes__)
    with pytest.raises(ValueError, match="batch dimension") as info:
        fastdto.evaluate(lambda x: x.sum(0, keepdim=True), torch.randn(4, 5))
    assert any("first 2 of the latents" in n for n in info.value.__notes__)
    W = torch.randn(4, 12)
    for mixing in (lambda x: torch.tanh(x - x.mean(0)) @ W, lambda x: torch.softmax(x @ W, dim=0)):
        with pytest.raises(ValueError, match="samples interact"):  # both gave a number: 0, and a wrong one
            fastdto.evaluate(mixing, z)
    bn = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    with pytest.raises(ValueError) as info:  # BatchNorm in training mode cannot take one sample
        fastdto.evaluate(lambda x: bn(x), z)
    assert any("model.eval() first" in n for n in info.value.__notes__)


def test_values_that_mutation_testing_found_unpinned(mlp_decoder):
    """Each of these changes went unnoticed by the suite (a mutation-testing pass): the auto rule's
    threshold, the sample numbering of errors in later chunks, a NaN output in a later chunk whose
    Jacobian is finite, and the column order of the reverse-mode fallback under an unsorted `active`."""
    z = torch.randn(400, 4)
    z = (z - z.mean(0)) / z.std(0) * torch.tensor([1.0, 0.1, 0.45, 0.55])  # just under and over 0.5
    assert fastdto.evaluate(mlp_decoder, z, active="auto").active.tolist() == [0, 3]

    W = torch.randn(3, 6, dtype=torch.float64)
    z = torch.rand(8, 3, dtype=torch.float64) + 0.5
    z[5, 1] = 0.0  # sqrt'(0) = inf: only sample 5's Jacobian is not finite
    with pytest.raises(ValueError, match=r"J\[5\]"):
        fastdto.evaluate(lambda x: torch.sqrt(x.abs()) @ W, z, chunk_size=2)
    z = torch.rand(8, 3, dtype=torch.float64)
    z[5, 0] = 2.0  # a NaN output in sample 5 only, with a finite Jacobian everywhere
    with pytest.raises(ValueError, match="NaN or Inf"):
        fastdto.evaluate(lambda x: x @ W + 0 * torch.sqrt(1.5 - x.detach()[:, :1]), z, chunk_size=2)

    centers, W = torch.randn(16, 4), torch.randn(16, 20)
    f = lambda x: torch.exp(-torch.cdist(x, centers) ** 2) @ W  # noqa: E731  (reverse mode only)
    z = torch.randn(6, 4)
    with pytest.warns(RuntimeWarning) as record:
        res = fastdto.evaluate(f, z, active=[2, 0])
    assert any("reverse mode" in str(w.message) for w in record)
    expected = fastdto.dto_from_jacobians(torch.from_numpy(reference.jacobians_loop(f, z))[:, :, [2, 0]])
    assert res.active.tolist() == [2, 0]
    torch.testing.assert_close(res.per_sample, expected.per_sample)
    assert torch.equal(res.permutation, expected.permutation) and torch.equal(res.signs, expected.signs)


def test_fewer_outputs_than_latents_warn():
    """Found by a new user's pass: J with n < d gave a DtO with only the ambiguous flags to say why."""
    with pytest.warns(RuntimeWarning, match="2 outputs for 4 latents: at least 2 singular values are 0"):
        res = fastdto.dto_from_jacobians(torch.randn(3, 2, 4, dtype=torch.float64))
    assert res.ambiguous.all()
    with pytest.warns(RuntimeWarning, match="3 outputs for 4 latents") as record:
        fastdto.evaluate(lambda z: z[:, :3] ** 3, torch.randn(6, 4), chunk_size=2)  # three chunks, one warning
    assert len([w for w in record if "outputs for" in str(w.message)]) == 1
