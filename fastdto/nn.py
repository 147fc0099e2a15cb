"""Autoencoder models used to reproduce Rolinek et al. (CVPR 2019).

Four model kinds, all built from a recipe (see :mod:`fastdto.recipes`) by :func:`build_model`:

``beta-vae``
    Gaussian posterior with a diagonal covariance.  The encoder emits ``2 d`` numbers per input,
    ``[mu | logvar]``; the KL term to the prior N(0, I) is weighted by ``beta``.
``vae``
    The same model with ``beta = 1``.
``ae``
    A deterministic autoencoder: the encoder emits ``d`` numbers, the code is used as it is and
    there is no KL term (``kl`` is reported as 0).
``beta-vae-sigma``
    Gaussian posterior with a full covariance ``Sigma = L L^T``.  The encoder emits
    ``d + d (d + 1) / 2`` numbers per input: ``[mu (d) | raw diagonal of L (d) | strictly lower
    part of L (d (d - 1) / 2, row-major)]``.  The diagonal of the Cholesky factor is made positive
    with ``exp`` (default; the raw number is then exactly ``log L_jj``, so the KL needs no extra
    log) or ``softplus`` (recipe key ``cholesky_diag``).  Samples are ``z = mu + L eps`` and the KL
    to N(0, I) is computed exactly, ``1/2 (||L||_F^2 + ||mu||^2 - d - 2 sum_j log L_jj)``.
    With an orthogonal ``Q`` the pair ``(Q mu, Q L)`` describes the rotated posterior, so this
    objective has no preferred orientation of the latent space.

Likelihood ("loss" in the recipe):

``bernoulli``
    the decoder network emits logits; the reconstruction term is binary cross-entropy with logits,
    summed over the input dimensions.
``square``
    the decoder network's output is linear; the reconstruction term is the sum of squared errors.

All reported losses are means over the batch of per-sample sums: ``loss = rec + beta * kl``.

Every model exposes

* ``encode(x) -> (mu, params)``: ``params`` is ``logvar`` (diagonal), the Cholesky factor ``L`` of
  shape ``(B, d, d)`` (Sigma) or ``None`` (AE, where ``mu`` is the code itself);
* ``decode(z)``: the mean of the likelihood (``sigmoid(logits)`` for Bernoulli);
* ``decoder``: an ``nn.Module`` mapping ``(B, d) -> (B, input_dim)`` that returns that same mean,
  i.e. **probabilities** for Bernoulli models and the linear output for square-loss models.  This
  is the map whose Jacobian :func:`fastdto.evaluate` analyses.  It shares its parameters with the
  model and is not registered as a sub-module (the state dict holds every weight once);
* ``loss(x, generator=None) -> dict(loss=, rec=, kl=)`` (tensors, batch means; the noise is drawn
  from ``generator`` when one is given);
* ``fused_grad(x, generator=None)``: writes the gradient of ``loss(x)["loss"]`` into ``p.grad`` of
  every parameter (overwriting it), drawing the same noise as :meth:`loss` would.  This is a
  hand-written forward/backward pass with a handful of kernels and no autograd graph (used by the
  training loop, where per-step overhead dominates for tiny models); only beta-VAE_Sigma with
  ``cholesky_diag="softplus"`` falls back to autograd.  ``tests/test_nn.py`` checks it against
  autograd for every model kind, likelihood and activation.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "MODEL_KINDS",
    "AE",
    "BetaVAE",
    "BetaVAESigma",
    "VAE",
    "build_model",
    "make_mlp",
]

ACTIVATIONS = ("relu", "tanh", "none")
LOSSES = ("bernoulli", "square")
MODEL_KINDS = ("beta-vae", "vae", "ae", "beta-vae-sigma")


def _activation_module(name: str) -> nn.Module | None:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "none":
        return None
    raise ValueError(f"unknown activation {name!r} (expected one of {', '.join(ACTIVATIONS)})")


def make_mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """``Linear`` layers ``in_dim -> hidden... -> out_dim``, ``activation`` after each hidden layer.

    The last layer is always linear; with no hidden layers the whole map is one affine layer.
    """
    layers: list[nn.Module] = []
    prev = int(in_dim)
    for width in hidden:
        layers.append(nn.Linear(prev, int(width)))
        act = _activation_module(activation)
        if act is not None:
            layers.append(act)
        prev = int(width)
    layers.append(nn.Linear(prev, int(out_dim)))
    return nn.Sequential(*layers)


def _mlp_spec(net: nn.Sequential) -> list[tuple[nn.Parameter, nn.Parameter, str]]:
    """(weight, bias, activation after the layer) per linear layer, for the hand-written passes.

    Holds the Parameter objects themselves, which survive re-pointing ``p.data`` (as the trainer's flat
    buffer does); the models re-read them whenever parameters may have been replaced."""
    spec: list[list] = []
    for m in net:
        if isinstance(m, nn.Linear):
            spec.append([m.weight, m.bias, "none"])
        elif isinstance(m, nn.ReLU):
            spec[-1][2] = "relu"
        elif isinstance(m, nn.Tanh):
            spec[-1][2] = "tanh"
        else:  # pragma: no cover - make_mlp builds nothing else
            raise TypeError(f"unsupported layer {m!r}")
    return [tuple(t) for t in spec]


def _mlp_forward(spec, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every layer (after its activation), input first."""
    outs = [x]
    h = x
    for w, b, act in spec:
        h = F.linear(h, w, b)
        if act == "tanh":
            h = torch.tanh(h)
        elif act == "relu":
            h = torch.relu(h)
        outs.append(h)
    return outs


def _grad_buffer(p: nn.Parameter) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


def _mlp_backward(spec, outs: list[torch.Tensor], g: torch.Tensor, need_input_grad: bool = False):
    """Back-propagate ``g`` (gradient w.r.t. the network's output) through the layers, writing
    each parameter's gradient into its ``.grad`` (overwritten); returns the input gradient when
    ``need_input_grad``."""
    aten = torch.ops.aten
    for i in range(len(spec) - 1, -1, -1):
        w, b, act = spec[i]
        if act == "tanh":
            g = aten.tanh_backward(g, outs[i + 1])
        elif act == "relu":
            g = aten.threshold_backward(g, outs[i + 1], 0)
        torch.mm(g.t(), outs[i], out=_grad_buffer(w))
        torch.sum(g, 0, out=_grad_buffer(b))
        if i > 0 or need_input_grad:
            g = torch.mm(g, w)
    return g


class ProbabilityDecoder(nn.Module):
    """``sigmoid(net(z))``: the Bernoulli mean, as a stand-alone module for DtO."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class _AutoencoderBase(nn.Module):
    kind = "base"

    def __init__(self, input_dim: int, latent_dim: int, enc_out: int, *, encoder_hidden=(),
                 encoder_activation="none", decoder_hidden=(), decoder_activation="none",
                 loss="bernoulli", beta: float = 1.0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r} (expected one of {', '.join(LOSSES)})")
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.loss_type = loss
        self.beta = float(beta)
        self.encoder_net = make_mlp(input_dim, encoder_hidden, enc_out, encoder_activation)
        self.decoder_net = make_mlp(latent_dim, decoder_hidden, input_dim, decoder_activation)
        # Not a registered sub-module: it shares decoder_net's parameters.
        self.__dict__["_decoder_view"] = (
            ProbabilityDecoder(self.decoder_net) if loss == "bernoulli" else self.decoder_net
        )
        self._refresh_specs()
        # load_state_dict(assign=True) and some conversions put new Parameter objects in place.
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._refresh_specs())

    def _refresh_specs(self) -> None:
        """The Parameters the hand-written passes (fused_grad) read: re-read after any replacement."""
        self._enc_spec = _mlp_spec(self.encoder_net)
        self._dec_spec = _mlp_spec(self.decoder_net)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)  # .to(), .double(), to_empty(), ...
        self._refresh_specs()
        return out

    # -- likelihood -------------------------------------------------------------------------
    @property
    def decoder(self) -> nn.Module:
        """(B, d) -> (B, input_dim): mean of the likelihood (probabilities for Bernoulli)."""
        return self.__dict__["_decoder_view"]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def rec_per_sample(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss per sample from the decoder network's raw output."""
        if self.loss_type == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(1)
        return (out - x).pow(2).sum(1)

    def _rec_grad(self, out: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """Gradient of ``scale * sum(rec_per_sample)`` w.r.t. the decoder network's output."""
        if self.loss_type == "bernoulli":
            return (torch.sigmoid(out) - x).mul_(scale)
        return (out - x).mul_(2.0 * scale)

    def _noise(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    # -- training ---------------------------------------------------------------------------
    def fused_grad(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Gradient of ``loss(x)['loss']`` into ``.grad`` (overwritten).  Autograd fallback."""
        for p in self.parameters():
            if p.grad is not None:
                p.grad.zero_()
        self.loss(x, generator)["loss"].backward()

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, input_dim={self.input_dim}, latent_dim={self.latent_dim}, "
                f"loss={self.loss_type}, beta={self.beta:g}")


class BetaVAE(_AutoencoderBase):
    """Diagonal-Gaussian posterior; ``encode`` returns ``(mu, logvar)``."""

    kind = "beta-vae"

    def __init__(self, input_dim: int, latent_dim: int, **kw):
        super().__init__(input_dim, latent_dim, 2 * int(latent_dim), **kw)

    def encode(self, x: torch.Tensor):
        h = self.encoder_net(x)
        d = self.latent_dim
        return h[:, :d], h[:, d:]

    @staticmethod
    def kl_per_sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample."""
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(1)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        mu, logvar = self.encode(x)
        eps = self._noise(mu, generator)
        z = torch.addcmul(mu, eps, torch.exp(0.5 * logvar))
        rec = self.rec_per_sample(self.decoder_net(z), x).mean()
        kl = self.kl_per_sample(mu, logvar).mean()
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl}

    def fused_grad(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Hand-written forward + backward of :meth:`loss` (same noise draw, no autograd)."""
        with torch.no_grad():
            d = self.latent_dim
            scale = 1.0 / x.shape[0]
            enc = _mlp_forward(self._enc_spec, x)
            h = enc[-1]
            mu, logvar = h[:, :d], h[:, d:]
            std = torch.exp(0.5 * logvar)
            noise = self._noise(mu, generator).mul_(std)  # z - mu
            dec = _mlp_forward(self._dec_spec, mu + noise)
            dz = _mlp_backward(self._dec_spec, dec, self._rec_grad(dec[-1], x, scale), True)
            kb = self.beta * scale
            # d/dmu = dz + beta mu / B ;  d/dlogvar = (dz (z - mu) + beta (exp(logvar) - 1) / B) / 2
            dmu = torch.add(dz, mu, alpha=kb)
            dlv = torch.addcmul(dz.mul_(noise), std, std, value=kb).sub_(kb).mul_(0.5)
            dh = torch.cat([dmu, dlv], 1)
            _mlp_backward(self._enc_spec, enc, dh)


class VAE(BetaVAE):
    """The plain VAE: a :class:`BetaVAE` with ``beta = 1``."""

    kind = "vae"

    def __init__(self, input_dim: int, latent_dim: int, **kw):
        kw["beta"] = 1.0
        super().__init__(input_dim, latent_dim, **kw)


class AE(_AutoencoderBase):
    """Deterministic autoencoder; ``encode`` returns ``(z, None)``; ``kl`` is 0."""

    kind = "ae"

    def __init__(self, input_dim: int, latent_dim: int, **kw):
        kw["beta"] = 0.0
        super().__init__(input_dim, latent_dim, int(latent_dim), **kw)

    def encode(self, x: torch.Tensor):
        return self.encoder_net(x), None

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        z = self.encoder_net(x)
        rec = self.rec_per_sample(self.decoder_net(z), x).mean()
        kl = torch.zeros((), device=x.device, dtype=rec.dtype)
        return {"loss": rec, "rec": rec, "kl": kl}

    def fused_grad(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            enc = _mlp_forward(self._enc_spec, x)
            dec = _mlp_forward(self._dec_spec, enc[-1])
            g = self._rec_grad(dec[-1], x, 1.0 / x.shape[0])
            dz = _mlp_backward(self._dec_spec, dec, g, True)
            _mlp_backward(self._enc_spec, enc, dz)


class BetaVAESigma(_AutoencoderBase):
    """Full-covariance Gaussian posterior; ``encode`` returns ``(mu, L)`` with ``L`` (B, d, d)."""

    kind = "beta-vae-sigma"

    def __init__(self, input_dim: int, latent_dim: int, cholesky_diag: str = "exp", **kw):
        d = int(latent_dim)
        if cholesky_diag not in ("exp", "softplus"):
            raise ValueError(f"cholesky_diag must be 'exp' or 'softplus', got {cholesky_diag!r}")
        super().__init__(input_dim, d, d + d * (d + 1) // 2, **kw)
        self.cholesky_diag = cholesky_diag
        rows, cols = torch.tril_indices(d, d, offset=-1, device="cpu")  # also under a meta-device context
        # Flat positions of L's entries in a row-major d x d matrix, diagonal first. A plain attribute
        # copied per device, not a buffer: to_empty() would leave a buffer uninitialised, and a
        # non-persistent one is not in the state dict to restore it.
        self._tril_flat = torch.cat([torch.arange(d, device="cpu") * (d + 1), rows * d + cols])

    def _tril_flat_index(self, device: torch.device) -> torch.Tensor:
        if self._tril_flat.device != device:  # follows the model on first use on a new device
            self._tril_flat = self._tril_flat.to(device)
        return self._tril_flat

    def _diag_and_log(self, raw: torch.Tensor):
        if self.cholesky_diag == "exp":
            return raw.exp(), raw
        diag = F.softplus(raw)
        # log(softplus(raw)) = raw + log1p(-exp(raw) / 2 + ...): raw itself below -20, where softplus
        # underflows in float32 long before its log would.
        return diag, torch.where(raw < -20.0, raw, F.softplus(raw.clamp_min(-20.0)).log())  # both branches finite

    def cholesky_from_raw(self, raw: torch.Tensor):
        """(L (B, d, d), log of its diagonal (B, d)) from the encoder's last d(d+1)/2 outputs."""
        d = self.latent_dim
        diag, logdiag = self._diag_and_log(raw[:, :d])
        vals = torch.cat([diag, raw[:, d:]], dim=1)
        L = vals.new_zeros(vals.shape[0], d * d)
        L = L.index_copy(1, self._tril_flat_index(vals.device), vals)
        return L.view(-1, d, d), logdiag

    def encode(self, x: torch.Tensor):
        h = self.encoder_net(x)
        d = self.latent_dim
        L, _ = self.cholesky_from_raw(h[:, d:])
        return h[:, :d], L

    @staticmethod
    def kl_per_sample(mu: torch.Tensor, L: torch.Tensor, log_diag: torch.Tensor | None = None):
        """Exact KL(N(mu, L L^T) || N(0, I)) per sample for lower-triangular ``L``."""
        if log_diag is None:
            log_diag = torch.diagonal(L, dim1=-2, dim2=-1).log()
        d = mu.shape[-1]
        return 0.5 * (L.pow(2).sum((-2, -1)) + mu.pow(2).sum(-1) - d - 2.0 * log_diag.sum(-1))

    @staticmethod
    def sample(mu: torch.Tensor, L: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``mu + L eps`` per sample."""
        return mu + torch.matmul(L, eps.unsqueeze(-1)).squeeze(-1)

    def marginal_logvar(self, L: torch.Tensor) -> torch.Tensor:
        """log of the diagonal of ``Sigma = L L^T`` (the per-coordinate posterior variances)."""
        return L.pow(2).sum(-1).log()

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        h = self.encoder_net(x)
        d = self.latent_dim
        mu = h[:, :d]
        L, logdiag = self.cholesky_from_raw(h[:, d:])
        eps = self._noise(mu, generator)
        z = self.sample(mu, L, eps)
        rec = self.rec_per_sample(self.decoder_net(z), x).mean()
        kl = self.kl_per_sample(mu, L, logdiag).mean()
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl}

    def fused_grad(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Hand-written forward + backward of :meth:`loss` for ``cholesky_diag="exp"``."""
        if self.cholesky_diag != "exp":
            return super().fused_grad(x, generator)
        with torch.no_grad():
            d = self.latent_dim
            B = x.shape[0]
            kb = self.beta / B
            enc = _mlp_forward(self._enc_spec, x)
            h = enc[-1]
            mu = h[:, :d]
            vals = torch.cat([h[:, d:2 * d].exp(), h[:, 2 * d:]], 1)  # L entries, diagonal first
            L = vals.new_zeros(B, d * d).index_copy_(1, self._tril_flat_index(x.device), vals).view(B, d, d)
            eps = self._noise(mu, generator)
            z = torch.baddbmm(mu.unsqueeze(-1), L, eps.unsqueeze(-1)).squeeze(-1)
            dec = _mlp_forward(self._dec_spec, z)
            dz = _mlp_backward(self._dec_spec, dec, self._rec_grad(dec[-1], x, 1.0 / B), True)
            # rec: dL = dz eps^T (lower part); KL: beta/B * (mu, L, -1/L_jj); exp chain on diagonal
            outer = (dz.unsqueeze(2) * eps.unsqueeze(1)).view(B, d * d)
            dvals = torch.index_select(outer, 1, self._tril_flat_index(x.device)).add_(vals, alpha=kb)
            dvals[:, :d].mul_(vals[:, :d]).sub_(kb)
            dh = torch.cat([dz.add_(mu, alpha=kb), dvals], 1)
            _mlp_backward(self._enc_spec, enc, dh)


_CLASSES = {"beta-vae": BetaVAE, "vae": VAE, "ae": AE, "beta-vae-sigma": BetaVAESigma}


def build_model(recipe: Mapping[str, Any] | str | os.PathLike, input_dim: int | None = None) -> _AutoencoderBase:
    """Model described by a recipe: a name such as ``"dsprites-beta-vae"``, a recipe file's path, or
    a dict from :func:`fastdto.recipes.load_recipe`.

    ``input_dim`` overrides the recipe's ``input_dim`` (e.g. with the dataset's own value).
    Parameters are initialised from torch's global RNG (seed it first for reproducible runs).
    """
    if isinstance(recipe, (str, os.PathLike)):
        from .recipes import load_recipe
        recipe = load_recipe(recipe)
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a recipe name, a path or a dict from load_recipe, got {type(recipe).__name__}")
    kind = recipe["model"]
    if kind not in _CLASSES:
        raise ValueError(f"unknown model {kind!r} (expected one of {', '.join(MODEL_KINDS)})")
    n_in = int(input_dim if input_dim is not None else recipe["input_dim"])
    enc = recipe.get("encoder", {})
    dec = recipe.get("decoder", {})
    kw: dict[str, Any] = dict(
        encoder_hidden=list(enc.get("hidden", [])),
        encoder_activation=enc.get("activation", "none"),
        decoder_hidden=list(dec.get("hidden", [])),
        decoder_activation=dec.get("activation", "none"),
        loss=recipe.get("loss", "bernoulli"),
    )
    if kind in ("beta-vae", "beta-vae-sigma"):
        kw["beta"] = float(recipe["beta"])
    if kind == "beta-vae-sigma":
        kw["cholesky_diag"] = recipe.get("cholesky_diag", "exp")
    return _CLASSES[kind](n_in, int(recipe["latent_dim"]), **kw)
