"""Models of fastdto.nn, the recipes, and executable versions of the paper's Propositions 2/3.

Propositions 2 and 3 of Rolinek et al. (2019) say that with a rotation-symmetric prior the
log-likelihood and ELBO objectives do not change when the latent space is rotated; the diagonal
posterior of the (beta-)VAE is what breaks that symmetry.  Here, for a linear decoder and the
square loss (where expectations have a closed form):

* beta-VAE_Sigma: rotating the encoder (mu -> Q mu, L -> Q L) and the decoder (W -> W Q^T) leaves
  the expected objective unchanged, and with shared noise draws even every sample's loss;
* beta-VAE (diagonal): after optimising the posterior variances, the objective's value does
  change under a non-trivial rotation, and is lowest when the decoder's columns are orthogonal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from fastdto.nn import AE, VAE, BetaVAESigma, build_model, make_mlp
from fastdto.recipes import (PROVENANCE_KEYS, RecipeError, load_recipe, recipe_dirs, recipe_names,
                             validate_recipe)

KINDS = ["beta-vae", "vae", "ae", "beta-vae-sigma"]
LOSSES = ["bernoulli", "square"]
DATASETS = ["dsprites", "mnist", "fashion-mnist", "synth-lin", "synth-nonlin"]


def small_recipe(kind="beta-vae", loss="square", n=7, d=3, enc=([8, 5], "relu"), dec=([4, 6], "tanh"),
                 beta=0.5, **extra):
    r = {"name": "t", "dataset": "synth-lin", "model": kind, "input_dim": n, "latent_dim": d,
         "beta": beta, "loss": loss, "encoder": {"hidden": list(enc[0]), "activation": enc[1]},
         "decoder": {"hidden": list(dec[0]), "activation": dec[1]}}
    r.update(extra)
    return r


def rotation(d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


# ------------------------------------------------------------------------------------------------
# shapes, finiteness, interfaces


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", KINDS)
def test_loss_shapes_and_finite(kind, loss):
    torch.manual_seed(0)
    m = build_model(small_recipe(kind, loss))
    x = torch.rand(16, 7)  # in [0, 1]: valid for both likelihoods
    out = m.loss(x)
    assert set(out) == {"loss", "rec", "kl"}
    for v in out.values():
        assert v.shape == () and torch.isfinite(v)
    assert torch.allclose(out["loss"], out["rec"] + m.beta * out["kl"])
    if kind == "ae":
        assert out["kl"] == 0
    else:
        assert out["kl"] >= 0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())

    mu, post = m.encode(x)
    assert mu.shape == (16, 3)
    if kind == "ae":
        assert post is None
    elif kind == "beta-vae-sigma":
        assert post.shape == (16, 3, 3)
        assert torch.equal(post, torch.tril(post)) and (torch.diagonal(post, 0, 1, 2) > 0).all()
    else:
        assert post.shape == (16, 3)
    z = torch.randn(5, 3)
    y = m.decode(z)
    assert y.shape == (5, 7)
    assert torch.equal(m.decoder(z), y)
    if loss == "bernoulli":
        assert ((y > 0) & (y < 1)).all()
        assert torch.allclose(y, torch.sigmoid(m.decoder_net(z)))
    else:
        assert torch.equal(y, m.decoder_net(z))
    # the decoder view shares parameters and is not saved twice
    assert set(dict(m.decoder.named_parameters()).values()) <= set(m.parameters())
    assert not any(k.startswith("decoder.") or k.startswith("_decoder") for k in m.state_dict())


def test_encoder_output_sizes():
    for kind, width in [("beta-vae", 2 * 4), ("vae", 2 * 4), ("ae", 4), ("beta-vae-sigma", 4 + 10)]:
        m = build_model(small_recipe(kind, d=4))
        assert m.encoder_net[-1].out_features == width
    assert build_model(small_recipe("vae", beta=9.0)).beta == 1.0
    assert isinstance(build_model(small_recipe("vae")), VAE)
    assert isinstance(build_model(small_recipe("ae")), AE)


def test_linear_when_no_hidden_layers():
    net = make_mlp(3, [], 5, "tanh")
    assert len(net) == 1 and isinstance(net[0], torch.nn.Linear)
    net = make_mlp(3, [4, 4], 5, "relu")
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError, match="activation"):
        make_mlp(3, [4], 5, "gelu")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", [(([], "none"), ([], "none")), (([6, 5], "relu"), ([4, 6], "tanh")),
                                  (([5], "tanh"), ([3], "relu"))])
def test_fused_grad_matches_autograd(kind, loss, arch):
    torch.manual_seed(1)
    m = build_model(small_recipe(kind, loss, enc=arch[0], dec=arch[1], beta=0.7)).double()
    x = torch.rand(11, 7, dtype=torch.float64)
    m.zero_grad()
    m.loss(x, torch.Generator().manual_seed(5))["loss"].backward()
    ref = [p.grad.clone() for p in m.parameters()]
    for p in m.parameters():
        p.grad.fill_(float("nan"))  # fused_grad must overwrite, not accumulate
    m.fused_grad(x, torch.Generator().manual_seed(5))
    for p, r in zip(m.parameters(), ref):
        torch.testing.assert_close(p.grad, r, rtol=1e-10, atol=1e-12)


def test_fused_grad_softplus_sigma_falls_back():
    torch.manual_seed(2)
    m = build_model(small_recipe("beta-vae-sigma", cholesky_diag="softplus")).double()
    x = torch.rand(9, 7, dtype=torch.float64)
    m.zero_grad()
    m.loss(x, torch.Generator().manual_seed(3))["loss"].backward()
    ref = [p.grad.clone() for p in m.parameters()]
    m.fused_grad(x, torch.Generator().manual_seed(3))
    for p, r in zip(m.parameters(), ref):
        torch.testing.assert_close(p.grad, r)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_grad_follows_replaced_parameters(kind):
    """load_state_dict(assign=True) and building on the meta device then to_empty() put new tensors in
    place: the hand-written pass must use them (it held the old Parameters) and agree with autograd."""
    torch.manual_seed(4)
    ref = build_model(small_recipe(kind, beta=0.7))
    with torch.device("meta"):
        m = build_model(small_recipe(kind, beta=0.7))
    m = m.to_empty(device="cpu")
    m.load_state_dict(ref.state_dict())
    other = build_model(small_recipe(kind, beta=0.7))
    other.load_state_dict(ref.state_dict(), assign=True)
    x = torch.rand(6, 7)
    ref.zero_grad()
    ref.loss(x, torch.Generator().manual_seed(5))["loss"].backward()
    for model in (m, other):
        model.fused_grad(x, torch.Generator().manual_seed(5))
        for p, r in zip(model.parameters(), ref.parameters()):
            assert p.grad is not None
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# beta-VAE_Sigma


def test_sigma_softplus_kl_stays_finite_for_tiny_diagonals():
    """softplus(raw) underflows float32 below raw = -103; log L_jj must not (it is raw there)."""
    m = build_model(small_recipe("beta-vae-sigma", d=2, cholesky_diag="softplus"))
    raw = torch.tensor([[-120.0, -30.0, 0.5]], requires_grad=True)
    L, logdiag = m.cholesky_from_raw(raw)
    kl = m.kl_per_sample(torch.zeros(1, 2), L, logdiag)
    ref = m.double().cholesky_from_raw(raw.detach().double())
    expected = m.kl_per_sample(torch.zeros(1, 2, dtype=torch.float64), *ref)
    assert kl.item() == pytest.approx(expected.item(), rel=1e-6)
    kl.sum().backward()
    assert torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("diag", ["exp", "softplus"])
def test_sigma_kl_matches_torch_distributions(diag):
    torch.manual_seed(3)
    d = 4
    m = build_model(small_recipe("beta-vae-sigma", d=d, cholesky_diag=diag)).double()
    raw = torch.randn(32, d * (d + 1) // 2, dtype=torch.float64)
    mu = torch.randn(32, d, dtype=torch.float64)
    L, logdiag = m.cholesky_from_raw(raw)
    assert torch.equal(L, torch.tril(L))
    ref = kl_divergence(MultivariateNormal(mu, scale_tril=L),
                        MultivariateNormal(torch.zeros(d, dtype=torch.float64),
                                           torch.eye(d, dtype=torch.float64)))
    torch.testing.assert_close(m.kl_per_sample(mu, L, logdiag), ref)
    torch.testing.assert_close(BetaVAESigma.kl_per_sample(mu, L), ref)
    # through the encoder as well
    x = torch.rand(10, 7, dtype=torch.float64)
    mu, L = m.encode(x)
    ref = kl_divergence(MultivariateNormal(mu, scale_tril=L),
                        MultivariateNormal(torch.zeros(d, dtype=torch.float64),
                                           torch.eye(d, dtype=torch.float64)))
    torch.testing.assert_close(m.loss(x)["kl"], ref.mean())


def test_sigma_sampling_has_covariance_LLT():
    m = build_model(small_recipe("beta-vae-sigma", d=3)).double()
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    L = torch.tensor([[[1.0, 0, 0], [0.5, 0.3, 0], [-0.2, 0.4, 0.6]]], dtype=torch.float64)
    eps = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = m.sample(mu.expand(len(eps), 3), L.expand(len(eps), 3, 3), eps)
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), (L @ L.mT)[0], atol=0.02, rtol=0)


# ------------------------------------------------------------------------------------------------
# Propositions 2/3 (rotation invariance) and how the diagonal posterior breaks it


def _linear_model(kind, n=5, d=3, beta=0.4, seed=0):
    torch.manual_seed(seed)
    return build_model(small_recipe(kind, "square", n=n, d=d, enc=([], "none"), dec=([], "none"),
                                    beta=beta)).double()


def _expected_sigma_objective(model, x, mu, L, W, b):
    """Closed-form E_eps[loss] for a linear decoder, square loss, posterior N(mu, L L^T)."""
    mean_rec = (mu @ W.T + b - x).pow(2).sum(1)
    noise_rec = (W @ L).pow(2).sum((-2, -1))  # E ||W L eps||^2 = ||W L||_F^2
    return (mean_rec + noise_rec + model.beta * model.kl_per_sample(mu, L)).mean()


def test_closed_form_matches_model_loss_sigma():
    """The closed form used below is the expectation of the model's own loss."""
    m = _linear_model("beta-vae-sigma")
    x = torch.randn(4, 5, dtype=torch.float64).repeat(25_000, 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mu, L = m.encode(x)
        W, b = m.decoder_net[0].weight, m.decoder_net[0].bias
        mc = m.loss(x, g)["loss"]
        exact = _expected_sigma_objective(m, x, mu, L, W, b)
    assert abs(mc - exact) < 0.01 * exact


def test_proposition_sigma_objective_is_rotation_invariant():
    m = _linear_model("beta-vae-sigma")
    Q = rotation(3, seed=1)
    x = torch.randn(64, 5, dtype=torch.float64)
    with torch.no_grad():
        mu, L = m.encode(x)
        W, b = m.decoder_net[0].weight.clone(), m.decoder_net[0].bias.clone()
        base = _expected_sigma_objective(m, x, mu, L, W, b)
        # rotated encoder: mu -> Q mu (a linear map of x, so the encoder can represent it) ...
        m.encoder_net[0].weight[:3] = Q @ m.encoder_net[0].weight[:3]
        m.encoder_net[0].bias[:3] = Q @ m.encoder_net[0].bias[:3]
        mu_r, _ = m.encode(x)
        torch.testing.assert_close(mu_r, mu @ Q.T)
        # ... posterior covariance Q L L^T Q^T, whose Cholesky factor enters the KL ...
        L_r = torch.linalg.cholesky(Q @ L @ L.mT @ Q.T)
        # ... and rotated decoder W -> W Q^T
        m.decoder_net[0].weight.copy_(W @ Q.T)
        rotated = _expected_sigma_objective(m, x, mu_r, L_r, W @ Q.T, b)
        torch.testing.assert_close(rotated, base, rtol=1e-12, atol=0)

        # same noise draws: z' = Q mu + (Q L) eps = Q z, so every sample's loss is unchanged
        eps = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        z = m.sample(mu, L, eps)
        z_r = m.sample(mu_r, Q @ L, eps)
        torch.testing.assert_close(z_r, z @ Q.T)
        rec_r = m.rec_per_sample(m.decoder_net(z_r), x)
        m.decoder_net[0].weight.copy_(W)
        rec = m.rec_per_sample(m.decoder_net(z), x)
        torch.testing.assert_close(rec_r, rec)
        torch.testing.assert_close(m.kl_per_sample(mu_r, L_r), m.kl_per_sample(mu, L))


def _optimal_diag_objective(model, x, mu, W, b):
    """Diagonal beta-VAE, linear decoder, square loss: objective at the best variances.

    Per latent j the expected loss is s_j var_j + beta/2 (var_j - log var_j) + const with
    s_j = ||W[:, j]||^2, minimised by var_j = beta / (beta + 2 s_j)."""
    s = W.pow(2).sum(0)
    var = model.beta / (model.beta + 2 * s)
    logvar = var.log().expand_as(mu)
    mean_rec = (mu @ W.T + b - x).pow(2).sum(1)
    return (mean_rec + (s * var).sum() + model.beta * model.kl_per_sample(mu, logvar)).mean(), logvar


def _optimal_sigma_objective(model, x, mu, W, b):
    """Full covariance: the best Sigma is (I + 2 W^T W / beta)^-1 (same for every sample)."""
    d = W.shape[1]
    sigma = torch.linalg.inv(torch.eye(d, dtype=W.dtype) + 2 * W.T @ W / model.beta)
    L = torch.linalg.cholesky(sigma).expand(len(x), d, d)
    return _expected_sigma_objective(model, x, mu, L, W, b)


def test_closed_form_matches_model_loss_diag():
    m = _linear_model("beta-vae", n=3, d=2)
    x = torch.randn(4, 3, dtype=torch.float64)
    W, b = m.decoder_net[0].weight, m.decoder_net[0].bias
    with torch.no_grad():
        mu, _ = m.encode(x)
        opt, logvar = _optimal_diag_objective(m, x, mu, W, b)
        # make the encoder emit exactly these log-variances, then average the model's loss
        m.encoder_net[0].weight[2:] = 0
        m.encoder_net[0].bias[2:] = logvar[0]
        xs = x.repeat(50_000, 1)
        mc = m.loss(xs, torch.Generator().manual_seed(0))["loss"]
    assert abs(mc - opt) < 0.01 * opt
    # and the variances are optimal: any change of them costs
    for delta in (-0.2, 0.2):
        s = W.pow(2).sum(0)
        lv = logvar + delta
        val = ((mu @ W.T + b - x).pow(2).sum(1) + (s * lv.exp()).sum(1)
               + m.beta * m.kl_per_sample(mu, lv)).mean()
        assert val > opt


def test_proposition_diagonal_posterior_breaks_rotation_invariance():
    # decoder with orthogonal columns of norms 2 and 1 (the synthetic linear task's M)
    m = _linear_model("beta-vae", n=3, d=2, beta=0.5)
    sigma_model = _linear_model("beta-vae-sigma", n=3, d=2, beta=0.5)
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(3, 2, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    W = U @ torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    b = torch.zeros(3, dtype=torch.float64)
    x = torch.randn(50, 3, dtype=torch.float64)
    mu = torch.randn(50, 2, dtype=torch.float64)
    values, full = [], []
    for Q in (torch.eye(2, dtype=torch.float64), R, rotation(2, seed=4)):
        values.append(_optimal_diag_objective(m, x, mu @ Q.T, W @ Q.T, b)[0])
        full.append(_optimal_sigma_objective(sigma_model, x, mu @ Q.T, W @ Q.T, b))
    # full covariance: invariant; diagonal: not, and best when the columns are orthogonal
    torch.testing.assert_close(full[1], full[0])
    torch.testing.assert_close(full[2], full[0])
    torch.testing.assert_close(values[0], full[0])  # orthogonal columns: diagonal is optimal
    assert values[1] > values[0] + 1e-3
    assert values[2] > values[0] + 1e-6
    assert all(v >= f - 1e-12 for v, f in zip(values, full))


# ------------------------------------------------------------------------------------------------
# recipes


def test_all_recipes_present():
    names = set(recipe_names())
    for ds in DATASETS:
        for variant in ["beta-vae", "vae", "ae", "beta-vae-sigma", "beta-vae-d10"]:
            assert f"{ds}-{variant}" in names
    assert len(names) >= 25


EXPECTED = {  # dataset: (input_dim, latent_dim, enc hidden, dec hidden, optimizer, lr, epochs, beta)
    "dsprites": (4096, 5, [1200, 1200], [1200, 1200, 1200], "adagrad", 1e-2, 50, 4.0),
    "mnist": (784, 6, [400], [500, 500], "adagrad", 1e-2, 400, 1.0),
    "fashion-mnist": (784, 6, [400], [500, 500], "adagrad", 1e-2, 500, 1.0),
    "synth-lin": (3, 2, [], [], "adam", 1e-3, 600, 1e-4),
    "synth-nonlin": (6, 2, [60, 40, 20], [20, 40, 60], "adam", 1e-3, 600, 1e-3),
}


@pytest.mark.parametrize("name", sorted(recipe_names()))
def test_recipe_loads_and_builds(name):
    r = load_recipe(name)
    assert r["name"] == name
    n, d, eh, dh, opt, lr, epochs, beta = EXPECTED[r["dataset"]]
    assert (r["input_dim"], r["encoder"]["hidden"], r["decoder"]["hidden"]) == (n, eh, dh)
    assert r["latent_dim"] == (10 if name.endswith("-d10") else d)
    assert (r["optimizer"]["name"], r["optimizer"]["lr"], r["training"]["epochs"]) == (opt, lr, epochs)
    assert r["training"]["batch_size"] == 256
    assert r["loss"] == ("square" if r["dataset"].startswith("synth") else "bernoulli")
    if r["model"] == "vae":
        assert r["beta"] == 1.0
    elif r["model"] != "ae":
        assert r["beta"] == beta
    for key in PROVENANCE_KEYS:
        assert r["provenance"][key].split(":")[0] in ("paper", "assumption")
    assert r["provenance"]["training.batch_size"].startswith("assumption")
    with torch.device("meta"):  # shapes only: no memory, no init cost
        m = build_model(r)
    assert m.input_dim == n and m.latent_dim == r["latent_dim"]
    assert m.encoder_net[0].in_features == n and m.decoder_net[-1].out_features == n
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    for net, side in ((m.encoder_net, "encoder"), (m.decoder_net, "decoder")):
        linears = [l for l in net if isinstance(l, torch.nn.Linear)]
        assert [l.out_features for l in linears[:-1]] == r[side]["hidden"]
        if r[side]["hidden"]:
            assert sum(isinstance(l, acts[r[side]["activation"]]) for l in net) == len(r[side]["hidden"])


def test_recipe_errors(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe("no-such-recipe")
    assert "synth-lin-beta-vae" in str(e.value) and "available" in str(e.value)
    good = load_recipe("synth-lin-beta-vae")
    for key, bad, word in [("latent_dim", 0, "latent_dim"), ("latent_dim", 2.5, "latent_dim"),
                           ("model", "gan", "model"), ("loss", "l1", "loss"), ("beta", "x", "beta")]:
        r = dict(good, **{key: bad})
        with pytest.raises(ValueError, match=word):
            validate_recipe(r)
    r = dict(good)
    del r["beta"]
    with pytest.raises(ValueError, match="'beta' is missing"):
        validate_recipe(r)
    r = dict(good, training={"epochs": 3})
    with pytest.raises(ValueError, match="training.batch_size"):
        validate_recipe(r)
    r = dict(good, encoder={"hidden": [3, -1], "activation": "relu"})
    with pytest.raises(ValueError, match="encoder.hidden"):
        validate_recipe(r)
    r = dict(good, provenance={k: v for k, v in good["provenance"].items() if k != "optimizer.lr"})
    with pytest.raises(ValueError, match="provenance.optimizer.lr"):
        validate_recipe(r)
    for r, word in [(dict(good, model="vae", beta=4.0), "must be 1 for a vae"),
                    (dict(good, cholesky_diag="exp"), "beta-vae-sigma"),
                    (dict(good, name="../out"), "'name'")]:
        with pytest.raises(ValueError, match=word):
            validate_recipe(r)
    r = dict(good, provenance=dict(good["provenance"], beta="because"))
    with pytest.raises(ValueError, match="provenance.beta"):
        validate_recipe(r)
    # Found by fuzzing the CLI: each was accepted (a typo ignored, a value that failed after training, a
    # float32 overflow in the optimiser, a test split equal to training points).
    ae = load_recipe("synth-lin-ae")
    sigma = load_recipe("synth-lin-beta-vae-sigma")
    for r, word in [(dict(sigma, **{"cholesky-diag": "softplus"}), "'cholesky-diag' is not a recipe key"),
                    (dict(good, training=dict(good["training"], batchsize=7)), "'training.batchsize' is not"),
                    (dict(good, optimizer=dict(good["optimizer"], momentum=0.9)), "'optimizer.momentum' is not"),
                    (dict(ae, beta=4.0), "does not apply to model = 'ae'"),
                    (dict(good, latent_dim=65), r"latent_dim' must be an integer in \[1, 64\]"),
                    (dict(good, decoder=dict(good["decoder"], hidden=[10**12])), "decoder.hidden"),
                    (dict(good, optimizer=dict(good["optimizer"], lr=1e39)), "optimizer.lr"),
                    (dict(good, optimizer=dict(good["optimizer"], lr=float("inf"))), "optimizer.lr"),
                    (dict(good, beta=float("inf")), "'beta' must be a finite"),
                    (dict(good, data={"seed": 1}), "'data.seed' would give the train and test splits")]:
        with pytest.raises(ValueError, match=word):
            validate_recipe(r)
    f = tmp_path / "broken.toml"
    f.write_text("name = [\n")
    with pytest.raises(RecipeError, match="TOML"):
        load_recipe(f)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_recipe_from_path_and_dirs(tmp_path):
    src = [d for d in recipe_dirs() if (d / "synth-lin-ae.toml").exists()][0]
    f = tmp_path / "mine.toml"
    f.write_text((src / "synth-lin-ae.toml").read_text().replace('name = "synth-lin-ae"\n', ""))
    r = load_recipe(str(f))
    assert r["name"] == "mine" and r["model"] == "ae"  # name defaults to the file stem
    dirs = [p.name for p in recipe_dirs()]
    assert dirs and dirs[-1] in ("models", "recipes_data")
    if len(dirs) == 2:
        assert dirs == ["recipes_data", "models"]  # the installed copy is looked at first


def test_build_model_takes_a_recipe_name_or_path(tmp_path):
    from fastdto.recipes import load_recipe, recipe_path
    by_name = build_model("synth-lin-beta-vae")
    by_path = build_model(recipe_path("synth-lin-beta-vae"))
    by_dict = build_model(load_recipe("synth-lin-beta-vae"))
    assert type(by_name) is type(by_path) is type(by_dict)
    assert [p.shape for p in by_name.parameters()] == [p.shape for p in by_dict.parameters()]
    with pytest.raises(ValueError, match="did you mean synth-lin-beta-vae"):
        build_model("synth-lin-betavae")
    with pytest.raises(TypeError, match="recipe name, a path or a dict"):
        build_model(3)


def test_marginal_logvar_is_log_diag_of_L_Lt(rng):
    """Posterior variances are diag(L L^T) = row sums of L^2 (column sums would give diag(L^T L))."""
    B, d = 7, 4
    L = np.tril(rng.standard_normal((B, d, d)))
    L[:, np.arange(d), np.arange(d)] = np.exp(rng.normal(0, 0.5, (B, d)))
    want = np.log(np.stack([np.diag(Li @ Li.T) for Li in L]))
    model = build_model(load_recipe("synth-lin-beta-vae-sigma"))
    got = model.marginal_logvar(torch.from_numpy(L)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # for a lower-triangular L the two differ (diag(L^T L) of the first row is sum_i L_i0^2, not L_00^2)
    assert not np.allclose(want, np.log(np.stack([np.diag(Li.T @ Li) for Li in L])))


def test_cholesky_diag_defaults_to_exp_when_recipe_omits_it(rng):
    """A beta-vae-sigma recipe without ``cholesky_diag`` gets the documented default ``exp``
    (diagonal of L = exp(raw)), not softplus."""
    recipe = load_recipe("synth-lin-beta-vae-sigma")
    del recipe["cholesky_diag"]
    model = build_model(recipe)
    assert isinstance(model, BetaVAESigma) and model.cholesky_diag == "exp"
    d = model.latent_dim
    raw = torch.from_numpy(rng.normal(0, 1, (5, d * (d + 1) // 2)))
    L, logdiag = model.cholesky_from_raw(raw)
    np.testing.assert_allclose(torch.diagonal(L, dim1=-2, dim2=-1).numpy(), np.exp(raw[:, :d].numpy()), rtol=1e-15)
    np.testing.assert_array_equal(logdiag.numpy(), raw[:, :d].numpy())
