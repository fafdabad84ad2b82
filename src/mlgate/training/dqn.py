"""Deep Q-learning for flow classification (the "RL-IDS" approach), as a contextual bandit.

The environment deals training flows to the agent. For each flow (the state: its 77
features) the agent picks a class (the action) and receives a reward: +1 for the right
class, -1 for a wrong one (optionally scaled by the rarity of the flow's true class).
The episode ends there: the next flow does not depend on the action taken, so the
problem is one-step (a contextual bandit) and the Q-value to learn is the expected
reward of the action, ``Q(s, a) = r``. There is no bootstrapped target, so no target
network is needed and double Q-learning (which corrects the over-estimation of a
bootstrapped ``max``) has nothing to correct; the discount ``gamma`` of the earlier
agent only mixed the unrelated next flow into the target.

What the agent learns from is still only bandit feedback: the reward of the action it
took (epsilon-greedy exploration), replayed from a buffer of past transitions. The
replay draws classes in a balanced way (``replay_balance``), so that the rare classes
(BENIGN and Infiltration in this sample) are seen as often as the common ones.

Inputs are heavy-tailed (byte counts and rates up to 1e9): each feature goes through a
signed ``log1p``, is robustly scaled by the median and interquartile range of the
training flows, and clipped. The Q-network is an MLP with an optional dueling head
(``Q = V + A - mean(A)``). Several networks trained from different seeds form an
ensemble whose Q-values are averaged.

The served artifact is torch-free: an ONNX graph of the preprocessing, the ensemble and
a softmax over the averaged Q-values divided by a temperature, fitted on out-of-fold
Q-values so that the served probabilities are calibrated.

torch is imported lazily: it belongs to the ``train`` extra, not the serving install.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Robustly scaled features are clipped to [-CLIP, CLIP] (a flow far outside the training
#: range should not dominate the first layer).
DEFAULT_CLIP = 10.0


@dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters of the agent; the defaults train the bundled model."""

    episodes: int = 60
    flows_per_step: int = 64
    batch_size: int = 256
    updates_per_step: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    replay_capacity: int = 100_000
    #: How replay draws transitions: class c with probability proportional to
    #: ``n_c ** (1 - replay_balance)`` (0: as they come, 1: every class equally often).
    replay_balance: float = 1.0
    #: Reward magnitude ``(n / (k * n_c)) ** reward_rarity_power`` (0: +-1 for all).
    reward_rarity_power: float = 0.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_fraction: float = 0.5
    hidden: tuple[int, ...] = (256, 128)
    dueling: bool = True
    clip: float = DEFAULT_CLIP
    #: Piecewise-linear encoding: up to ``bins`` bins per feature (0: off).
    bins: int = 32
    #: Where the bins' edges come from: ``"tree"``, the thresholds of a decision tree
    #: fitted on the feature alone against the labels (target-aware, balanced class
    #: weights); ``"quantile"``, the feature's quantiles (label-blind).
    bin_method: str = "tree"
    #: Fewest training flows in a tree bin (``bin_method="tree"``).
    bin_min_flows: int = 5
    #: Networks in the ensemble (seeds ``seed``, ``seed + 1``, ...), Q-values averaged.
    ensemble: int = 1
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data


@dataclass
class EpisodeStats:
    episode: int
    epsilon: float
    mean_reward: float
    loss: float
    #: Macro-F1 on the evaluation rows given to :func:`train_agent` (None without them).
    eval_macro_f1: float | None


@dataclass
class AgentResult:
    """The trained ensemble (after the last episode) and its history."""

    network: Any
    history: list[EpisodeStats] = field(default_factory=list)
    #: Q-values of the evaluation rows after every episode (when evaluation rows are given).
    eval_q: list[np.ndarray] = field(default_factory=list)


def require_torch() -> Any:
    from mlgate.training.common import MissingDependencyError

    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            "training the DQN needs PyTorch: pip install 'mlgate[train]'"
        ) from None
    return torch


def class_rewards(y: np.ndarray, n_classes: int, power: float) -> np.ndarray:
    """Reward magnitude per true class: (inverse frequency) ** power, mean 1 over flows."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    weights = (len(y) / (n_classes * counts)) ** power
    return weights / float(np.mean(weights[y]))


def replay_class_weights(y: np.ndarray, n_classes: int, balance: float) -> np.ndarray:
    """Per-transition sampling weight by true class: ``n_c ** -balance`` (unnormalised)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return counts**-balance


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes that occur in ``y_true`` or ``y_pred``."""
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: the first preprocessing step (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def robust_scaling(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (median) and scale (IQR, else std, else 1) of the signed-log features."""
    logged = signed_log(x_train)
    centre = np.median(logged, axis=0)
    q75, q25 = np.percentile(logged, [75, 25], axis=0)
    scale = q75 - q25
    std = logged.std(axis=0)
    scale = np.where(scale > 1e-6, scale, np.where(std > 1e-6, std, 1.0))
    return centre, scale


def preprocess(x: np.ndarray, centre: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    """What the network's first step computes, in numpy (float64)."""
    return np.clip((signed_log(x) - centre) / scale, -clip, clip)


def encoding_bins(
    z: np.ndarray,
    bins: int,
    y: np.ndarray | None = None,
    *,
    method: str = "quantile",
    min_flows: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Piecewise-linear encoding of scaled features ``z`` (rows x features).

    Each feature's range is cut into bins; a bin ``[lo, lo + width]`` encodes a value as
    ``clip((z - lo) / width, 0, 1)``. Trees split features at thresholds; this gives the
    network the same kind of handle on exact ranges (e.g. a TCP window size), which a
    log scale blurs. The edges are, per feature:

    - ``"quantile"``: the distinct quantiles ``0, 1/bins, ..., 1`` of its values;
    - ``"tree"`` (needs the labels ``y``): its minimum, its maximum and the thresholds
      of a decision tree with at most ``bins`` leaves of at least ``min_flows`` flows,
      fitted on that feature alone against ``y`` with balanced class weights: the edges
      sit where the classes change, rare classes included (the piecewise-linear
      encoding with target-aware bins of Gorishniy et al., 2022).

    Returns the feature, ``lo`` and ``width`` of every bin, features in order.
    """
    if method not in ("quantile", "tree"):
        raise ValueError(f"unknown bin method {method!r} (quantile or tree)")
    if method == "tree" and y is None:
        raise ValueError("tree bins need the labels")
    features, lows, widths = [], [], []
    if bins < 1:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    for j in range(z.shape[1]):
        column = z[:, j]
        if method == "tree":
            edges = _tree_edges(column, np.asarray(y), bins, min_flows)
        else:
            edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)))
        for lo, hi in itertools.pairwise(edges):
            if hi - lo > 1e-6:
                features.append(j)
                lows.append(lo)
                widths.append(hi - lo)
    return np.asarray(features, np.int64), np.asarray(lows), np.asarray(widths)


def _tree_edges(column: np.ndarray, y: np.ndarray, bins: int, min_flows: int) -> np.ndarray:
    from sklearn.tree import DecisionTreeClassifier

    if bins < 2 or column.min() == column.max():
        return np.unique([column.min(), column.max()])
    tree = DecisionTreeClassifier(
        max_leaf_nodes=bins,
        min_samples_leaf=min_flows,
        class_weight="balanced",
        random_state=0,
    ).fit(column[:, None], y)
    thresholds = tree.tree_.threshold[tree.tree_.feature >= 0]
    return np.unique(np.concatenate([[column.min(), column.max()], thresholds]))


def build_network(
    x_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    config: DQNConfig,
    seed: int | None = None,
) -> Any:
    """An ensemble of ``config.ensemble`` Q-networks sharing the preprocessing (its
    bins placed on ``x_train``, with the labels ``y_train`` for tree bins).

    The preprocessing (signed log1p, robust scaling, clipping) lives in the module so the
    exported graph does it too; the log runs in the input's precision (float64 when
    served), so magnitudes beyond float32 never reach the float32 layers.
    """
    torch = require_torch()
    nn = torch.nn
    centre, scale = robust_scaling(x_train)
    # The bins are computed on float32-rounded scaling, as the module applies it.
    z_train = np.clip(
        (signed_log(x_train).astype(np.float32) - centre.astype(np.float32))
        / scale.astype(np.float32),
        -config.clip,
        config.clip,
    ).astype(np.float64)
    bin_feature, bin_lo, bin_width = encoding_bins(
        z_train, config.bins, y_train, method=config.bin_method, min_flows=config.bin_min_flows
    )
    n_features = x_train.shape[1] + len(bin_feature)
    first_seed = config.seed if seed is None else seed

    # torch is imported lazily, so the classes are built here; mypy sees them as Any.
    class QNetwork(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            width = n_features
            for size in config.hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            self.body = nn.Sequential(*layers)
            self.advantage = nn.Linear(width, n_classes)
            self.value = nn.Linear(width, 1) if config.dueling else None

        def forward(self, z: Any) -> Any:
            h = self.body(z)
            a = self.advantage(h)
            if self.value is None:
                return a
            return self.value(h) + a - a.mean(dim=1, keepdim=True)

    class Ensemble(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
            self.register_buffer("bin_feature", torch.tensor(bin_feature, dtype=torch.int64))
            self.register_buffer("bin_lo", torch.tensor(bin_lo, dtype=torch.float32))
            self.register_buffer("bin_width", torch.tensor(bin_width, dtype=torch.float32))
            self.clip = float(config.clip)
            members = []
            for k in range(config.ensemble):
                torch.manual_seed(first_seed + k)
                members.append(QNetwork())
            self.members = nn.ModuleList(members)

        def features(self, x: Any) -> Any:
            logged = torch.sign(x) * torch.log1p(torch.abs(x))
            z = (logged.to(self.centre.dtype) - self.centre) / self.scale
            z = torch.clamp(z, -self.clip, self.clip)
            if not len(self.bin_lo):
                return z
            encoded = torch.clamp((z[:, self.bin_feature] - self.bin_lo) / self.bin_width, 0, 1)
            return torch.cat([z, encoded], dim=1)

        def member_q(self, k: int, z: Any) -> Any:
            return self.members[k](z)

        def forward(self, x: Any) -> Any:
            z = self.features(x)
            q = self.members[0](z)
            for member in self.members[1:]:
                q = q + member(z)
            return q / len(self.members)

    return Ensemble()


def q_values(network: Any, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Averaged Q-values for many rows, without gradients."""
    torch = require_torch()
    out = []
    network.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = torch.tensor(x[start : start + batch], dtype=torch.float64)
            out.append(network(chunk).numpy())
    return np.concatenate(out).astype(np.float64)


def train_agent(
    x_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    config: DQNConfig,
    *,
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    on_episode: Callable[[EpisodeStats], None] | None = None,
) -> AgentResult:
    """Train the ensemble for ``config.episodes`` episodes (all members in lockstep).

    An episode deals every training flow once, ``flows_per_step`` at a time, to each
    member; each member explores epsilon-greedily on its own Q-values, stores the
    transitions (flow, action, reward) in its replay buffer and makes
    ``updates_per_step`` updates on replayed batches, regressing ``Q(s, a)`` on ``r``.
    With ``x_eval``/``y_eval`` the ensemble is scored after every episode (cross-
    validation uses it to pick the number of episodes); nothing is selected here.
    """
    torch = require_torch()
    network = build_network(x_train, y_train, n_classes, config)
    x_all = network.features(torch.tensor(x_train, dtype=torch.float64)).detach()
    rewards = class_rewards(y_train, n_classes, config.reward_rarity_power)
    class_weight = replay_class_weights(y_train, n_classes, config.replay_balance)
    members = []
    for k, member in enumerate(network.members):
        members.append(
            _Learner(
                member,
                torch.optim.Adam(
                    member.parameters(),
                    lr=config.learning_rate,
                    weight_decay=config.weight_decay,
                ),
                np.random.default_rng(config.seed + k),
                config.replay_capacity,
            )
        )
    result = AgentResult(network)
    decay = max(1, int(config.episodes * config.epsilon_decay_fraction))
    n = len(x_train)
    for episode in range(1, config.episodes + 1):
        fraction = min(1.0, (episode - 1) / decay)
        epsilon = config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)
        episode_rewards: list[float] = []
        losses: list[float] = []
        network.train()
        for learner in members:
            order = learner.rng.permutation(n)
            for start in range(0, n, config.flows_per_step):
                states = order[start : start + config.flows_per_step]
                with torch.no_grad():
                    greedy = learner.net(x_all[states]).argmax(dim=1).numpy()
                explore = learner.rng.random(len(states)) < epsilon
                actions = np.where(explore, learner.rng.integers(0, n_classes, len(states)), greedy)
                truth = y_train[states]
                reward = np.where(actions == truth, 1.0, -1.0) * rewards[truth]
                episode_rewards.extend(reward.tolist())
                learner.store(states, actions, reward, class_weight[truth])
                for _ in range(config.updates_per_step):
                    loss = learner.update(x_all, config.batch_size, torch)
                    if loss is not None:
                        losses.append(loss)
        eval_f1 = None
        if x_eval is not None and y_eval is not None:
            q = q_values(network, x_eval)
            result.eval_q.append(q)
            eval_f1 = macro_f1(y_eval, q.argmax(axis=1), n_classes)
        stats = EpisodeStats(
            episode=episode,
            epsilon=round(epsilon, 4),
            mean_reward=float(np.mean(episode_rewards)),
            loss=float(np.mean(losses)) if losses else math.nan,
            eval_macro_f1=eval_f1,
        )
        result.history.append(stats)
        if on_episode is not None:
            on_episode(stats)
    network.eval()
    return result


class _Learner:
    """One ensemble member: its network, optimiser, random stream and replay buffer.

    The buffer holds (flow index, action, reward, sampling weight); replay draws with
    probability proportional to the weight (the class balance of :class:`DQNConfig`).
    """

    def __init__(self, net: Any, optimizer: Any, rng: np.random.Generator, capacity: int) -> None:
        self.net = net
        self.optimizer = optimizer
        self.rng = rng
        self.capacity = capacity
        self.state = np.zeros(capacity, dtype=np.int64)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.weight = np.zeros(capacity, dtype=np.float64)
        self.stored = 0
        self.cursor = 0

    def store(
        self, states: np.ndarray, actions: np.ndarray, reward: np.ndarray, weight: np.ndarray
    ) -> None:
        slots = (self.cursor + np.arange(len(states))) % self.capacity
        self.state[slots], self.action[slots] = states, actions
        self.reward[slots], self.weight[slots] = reward, weight
        self.cursor = (self.cursor + len(states)) % self.capacity
        self.stored = min(self.capacity, self.stored + len(states))

    def update(self, x_all: Any, batch_size: int, torch: Any) -> float | None:
        if self.stored < batch_size:
            return None
        p = self.weight[: self.stored]
        pick = self.rng.choice(self.stored, size=batch_size, p=p / p.sum())
        s = x_all[self.state[pick]]
        a = torch.tensor(self.action[pick])
        r = torch.tensor(self.reward[pick])
        predicted = self.net(s).gather(1, a.unsqueeze(1)).squeeze(1)
        loss = torch.nn.functional.mse_loss(predicted, r)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.optimizer.step()
        return float(loss.item())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``y`` (golden section
    search over log T in [1e-3, 1e3])."""
    lo, hi = math.log(1e-3), math.log(1e3)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, y, math.exp(a)), _nll(logits, y, math.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, y, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy, in bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def export_onnx(network: Any, temperature: float, n_features: int) -> bytes:
    """The served graph: raw features (float64) -> calibrated class probabilities."""
    torch = require_torch()

    class Calibrated(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.q = copy.deepcopy(network)
            self.register_buffer("temperature", torch.tensor(float(temperature)))

        def forward(self, x: Any) -> Any:
            return torch.softmax(self.q(x) / self.temperature, dim=1)

    model = Calibrated().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter warns that it is legacy; it needs no onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, n_features, dtype=torch.float64),),
            buffer,
            input_names=["x"],
            output_names=["probabilities"],
            dynamic_axes={"x": {0: "rows"}, "probabilities": {0: "rows"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def calibrated_probabilities(network: Any, temperature: float, x: np.ndarray) -> np.ndarray:
    """What the exported graph computes, in torch (to check the export against)."""
    return softmax(q_values(network, x), temperature)


def network_arrays(network: Any, temperature: float) -> dict[str, np.ndarray]:
    """The ensemble as plain arrays (for the torch-free explainer, saved as ``.npz``).

    Keys: ``centre``, ``scale``, ``clip``, ``bin_feature``/``bin_lo``/``bin_width`` (the
    piecewise-linear encoding), ``temperature``, and per member ``k`` and
    layer ``i`` ``m{k}.w{i}`` / ``m{k}.b{i}`` (weights as [in, out]) for the hidden
    layers, ``m{k}.adv_w``/``m{k}.adv_b`` and, with a dueling head,
    ``m{k}.val_w``/``m{k}.val_b``.
    """
    arrays: dict[str, np.ndarray] = {
        "centre": network.centre.numpy().astype(np.float64),
        "scale": network.scale.numpy().astype(np.float64),
        "clip": np.asarray(network.clip, dtype=np.float64),
        "bin_feature": network.bin_feature.numpy().astype(np.int64),
        "bin_lo": network.bin_lo.numpy().astype(np.float64),
        "bin_width": network.bin_width.numpy().astype(np.float64),
        "temperature": np.asarray(temperature, dtype=np.float64),
        "members": np.asarray(len(network.members), dtype=np.int64),
    }
    for k, member in enumerate(network.members):
        linears = [m for m in member.body if hasattr(m, "weight")]
        for i, layer in enumerate(linears):
            arrays[f"m{k}.w{i}"] = layer.weight.detach().numpy().T.astype(np.float64)
            arrays[f"m{k}.b{i}"] = layer.bias.detach().numpy().astype(np.float64)
        arrays[f"m{k}.adv_w"] = member.advantage.weight.detach().numpy().T.astype(np.float64)
        arrays[f"m{k}.adv_b"] = member.advantage.bias.detach().numpy().astype(np.float64)
        if member.value is not None:
            arrays[f"m{k}.val_w"] = member.value.weight.detach().numpy().T.astype(np.float64)
            arrays[f"m{k}.val_b"] = member.value.bias.detach().numpy().astype(np.float64)
    return arrays
