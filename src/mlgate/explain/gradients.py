"""Exact integrated gradients for the ``ids`` DQN (an ensemble of ReLU Q-networks).

The explained output for class ``c`` is the logit the served softmax takes,
``mean_k Q_k(z)[c] / T``, where ``z`` is the network's input for the row: each feature
signed-``log1p``-ed, robustly scaled and clipped, followed by its piecewise-linear
encoding (a few inputs per feature, each a function of that feature alone). Integrated
gradients against a reference row ``r`` (the training medians of the reference profile)
integrate the gradient along the straight path from ``z(r)`` to ``z(x)`` in that input
space, and a feature's attribution is the sum over the inputs that encode it:

    IG_i = (z_i - z_i(r)) * integral_0^1 d out / d z_i (z(r) + a (z(x) - z(r))) da

A ReLU network is piecewise linear, so along the path its gradient is constant between
the points where some unit's pre-activation changes sign. Those points are found layer
by layer (each layer's pre-activations are linear between the previous breakpoints), the
gradient is taken in the middle of every segment, and the integral is a finite sum:
exact, so ``sum_i IG_i = out(x) - out(r)`` holds to rounding (the completeness axiom;
tested). The ensemble's IG is the mean of its members' (IG is linear in the function).

Everything is numpy on the weights stored beside the served graph (``explainer.npz``,
:func:`mlgate.training.dqn.network_arrays`); no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Member:
    """One Q-network: hidden layers (weights [in, out], biases) and the output layer for
    every class (dueling head folded in: ``Q = h @ out_w + out_b``)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    out_w: np.ndarray
    out_b: np.ndarray


@dataclass(frozen=True)
class QEnsemble:
    """The DQN as arrays: preprocessing, members, softmax temperature."""

    centre: np.ndarray
    scale: np.ndarray
    clip: float
    bin_feature: np.ndarray
    bin_lo: np.ndarray
    bin_width: np.ndarray
    temperature: float
    members: list[Member]

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> QEnsemble:
        members = []
        for k in range(int(arrays["members"])):
            weights, biases = [], []
            i = 0
            while f"m{k}.w{i}" in arrays:
                weights.append(np.asarray(arrays[f"m{k}.w{i}"], dtype=np.float64))
                biases.append(np.asarray(arrays[f"m{k}.b{i}"], dtype=np.float64))
                i += 1
            adv_w = np.asarray(arrays[f"m{k}.adv_w"], dtype=np.float64)
            adv_b = np.asarray(arrays[f"m{k}.adv_b"], dtype=np.float64)
            if f"m{k}.val_w" in arrays:
                # Q = V + A - mean(A): linear in the last hidden layer, folded into one layer.
                val_w = np.asarray(arrays[f"m{k}.val_w"], dtype=np.float64)
                val_b = np.asarray(arrays[f"m{k}.val_b"], dtype=np.float64)
                out_w = adv_w - adv_w.mean(axis=1, keepdims=True) + val_w
                out_b = adv_b - adv_b.mean() + val_b
            else:
                out_w, out_b = adv_w, adv_b
            members.append(Member(weights, biases, out_w, out_b))
        return cls(
            centre=np.asarray(arrays["centre"], dtype=np.float64),
            scale=np.asarray(arrays["scale"], dtype=np.float64),
            clip=float(arrays["clip"]),
            bin_feature=np.asarray(arrays.get("bin_feature", np.zeros(0)), dtype=np.int64),
            bin_lo=np.asarray(arrays.get("bin_lo", np.zeros(0)), dtype=np.float64),
            bin_width=np.asarray(arrays.get("bin_width", np.zeros(0)), dtype=np.float64),
            temperature=float(arrays["temperature"]),
            members=members,
        )

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """The network's input: scaled features, then their piecewise-linear encoding."""
        x = np.asarray(x, dtype=np.float64)
        logged = np.sign(x) * np.log1p(np.abs(x))
        z = np.clip((logged - self.centre) / self.scale, -self.clip, self.clip)
        if not len(self.bin_lo):
            return z
        encoded = np.clip((z[:, self.bin_feature] - self.bin_lo) / self.bin_width, 0.0, 1.0)
        return np.concatenate([z, encoded], axis=1)

    @property
    def owners(self) -> np.ndarray:
        """The feature each input of the network encodes."""
        return np.concatenate([np.arange(len(self.centre)), self.bin_feature])

    def logits(self, z: np.ndarray) -> np.ndarray:
        """``mean_k Q_k(z) / T`` for preprocessed rows ``z`` (rows x classes)."""
        total = np.zeros((len(z), len(self.members[0].out_b)))
        for m in self.members:
            h = z
            for w, b in zip(m.weights, m.biases, strict=True):
                h = np.maximum(h @ w + b, 0.0)
            total += h @ m.out_w + m.out_b
        return total / len(self.members) / self.temperature


def _breakpoints(member: Member, start: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Sorted path positions in [0, 1] where the member's gradient can change."""
    alphas = np.array([0.0, 1.0])
    for depth in range(len(member.weights)):
        z = start[None, :] + alphas[:, None] * delta[None, :]
        h = z
        for w, b in zip(member.weights[:depth], member.biases[:depth], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        pre = h @ member.weights[depth] + member.biases[depth]  # (points, units)
        left, right = pre[:-1], pre[1:]
        crossing = (left * right) < 0
        seg, _ = np.nonzero(crossing)
        lo, hi = alphas[seg], alphas[seg + 1]
        fraction = left[crossing] / (left[crossing] - right[crossing])
        alphas = np.unique(np.concatenate([alphas, lo + (hi - lo) * fraction]))
    return alphas


def _member_ig(member: Member, start: np.ndarray, end: np.ndarray, cls: int) -> np.ndarray:
    delta = end - start
    alphas = _breakpoints(member, start, delta)
    widths = np.diff(alphas)
    middle = alphas[:-1] + widths / 2
    z = start[None, :] + middle[:, None] * delta[None, :]
    masks = []
    h = z
    for w, b in zip(member.weights, member.biases, strict=True):
        pre = h @ w + b
        masks.append(pre > 0)
        h = np.maximum(pre, 0.0)
    # Backward pass of d out[cls] / d z at every segment's midpoint.
    grad = np.broadcast_to(member.out_w[:, cls], (len(middle), member.out_w.shape[0]))
    for w, mask in zip(reversed(member.weights), reversed(masks), strict=True):
        grad = (grad * mask) @ w.T
    return np.asarray(delta * (widths @ grad))


def integrated_gradients(
    model: QEnsemble, x: np.ndarray, reference: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: attributions to every feature for ``classes[row]``, the base value (logit
    at the reference) and the output (logit at the row). ``base + attributions.sum() ==
    output`` up to rounding."""
    z = model.preprocess(x)
    z_ref = model.preprocess(np.asarray(reference, dtype=np.float64)[None, :])[0]
    logits = model.logits(z)
    base = model.logits(z_ref[None, :])[0]
    scale = 1.0 / (len(model.members) * model.temperature)
    encoded = np.zeros_like(z)
    for row in range(len(z)):
        for member in model.members:
            encoded[row] += _member_ig(member, z_ref, z[row], int(classes[row]))
    encoded *= scale
    # A feature's attribution is the sum over the network inputs that encode it.
    out = np.zeros((len(z), len(model.centre)))
    np.add.at(out.T, model.owners, encoded.T)
    rows = np.arange(len(z))
    return out, base[np.asarray(classes, dtype=np.int64)], logits[rows, classes]
