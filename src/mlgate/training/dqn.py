"""Deep Q-learning for flow classification (the "RL-IDS" approach).

The environment streams training flows. For each flow (the state: its 77 features) the
agent picks a class (the action) and is rewarded +w for a correct class and -w for a
wrong one, where w grows with the rarity of the flow's true class, so that the rare
classes (BENIGN and Infiltration here) are not drowned out. The next state is the next
flow of the stream. Learning uses experience replay, a target network synchronised every
few hundred updates, and epsilon-greedy exploration decaying over episodes. Several
flows are played side by side (``parallel_flows``) so an update sees fresh experience
without one Python step per flow.

The served artifact is torch-free: an ONNX graph of the preprocessing, the Q-network and
a softmax over Q-values divided by a temperature fitted on validation data, so that the
served probabilities are calibrated (expected calibration error is reported).

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
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters of the agent; the defaults train the bundled model."""

    episodes: int = 40
    parallel_flows: int = 32
    batch_size: int = 256
    gamma: float = 0.1
    learning_rate: float = 1e-3
    replay_capacity: int = 50_000
    target_sync_updates: int = 250
    updates_per_step: int = 2
    epsilon_start: float = 1.0
    epsilon_end: float = 0.02
    epsilon_decay_fraction: float = 0.5
    reward_rarity_power: float = 0.5
    hidden: tuple[int, ...] = (256, 128)
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
    val_macro_f1: float


@dataclass
class DQNResult:
    """The trained network (best validation episode), its temperature and history."""

    network: Any
    temperature: float
    best_episode: int
    best_val_macro_f1: float
    history: list[EpisodeStats] = field(default_factory=list)


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


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def build_network(x_train: np.ndarray, n_classes: int, hidden: tuple[int, ...]) -> torch.nn.Module:
    """Q-network with its preprocessing inside: signed log1p, then standardisation.

    Flow features span 0..1e9 and some are negative; the signed log keeps them on one
    scale, and keeping it in the module means the exported graph does it too.
    """
    torch = require_torch()
    nn = torch.nn
    logged = np.sign(x_train) * np.log1p(np.abs(x_train))
    mean = logged.mean(axis=0)
    std = logged.std(axis=0)
    std[std < 1e-6] = 1.0

    # torch is imported lazily, so the classes are built here; mypy sees it as Any.
    class QNetwork(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
            layers: list[Any] = []
            width = x_train.shape[1]
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            layers.append(nn.Linear(width, n_classes))
            self.mlp = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            # The log runs in the input's precision (float64 when served), so that
            # magnitudes beyond float32 never reach the float32 layers.
            z = (torch.sign(x) * torch.log1p(torch.abs(x))).to(self.mean.dtype)
            return self.mlp((z - self.mean) / self.std)

    return QNetwork()


def q_values(network: Any, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Q-values for many rows, without gradients."""
    torch = require_torch()
    out = []
    network.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = torch.tensor(x[start : start + batch], dtype=torch.float64)
            out.append(network(chunk).numpy())
    return np.concatenate(out).astype(np.float64)


def train_dqn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    config: DQNConfig,
    on_episode: Callable[[EpisodeStats], None] | None = None,
) -> DQNResult:
    """Train the agent; keep the network of the episode with the best validation macro-F1."""
    torch = require_torch()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    network = build_network(x_train, n_classes, config.hidden)
    target = copy.deepcopy(network)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    rewards = class_rewards(y_train, n_classes, config.reward_rarity_power)
    x_all = torch.tensor(x_train, dtype=torch.float32)

    capacity = config.replay_capacity
    buffer_state = np.zeros(capacity, dtype=np.int64)  # indices into x_train
    buffer_next = np.zeros(capacity, dtype=np.int64)
    buffer_action = np.zeros(capacity, dtype=np.int64)
    buffer_reward = np.zeros(capacity, dtype=np.float32)
    buffer_done = np.zeros(capacity, dtype=np.float32)
    stored = 0
    cursor = 0
    updates = 0

    best_f1, best_episode, best_state = -1.0, 0, copy.deepcopy(network.state_dict())
    history: list[EpisodeStats] = []
    decay_episodes = max(1, int(config.episodes * config.epsilon_decay_fraction))
    width = config.parallel_flows
    for episode in range(1, config.episodes + 1):
        fraction = min(1.0, (episode - 1) / decay_episodes)
        epsilon = config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)
        order = rng.permutation(len(x_train))
        episode_rewards: list[float] = []
        losses: list[float] = []
        network.train()
        for start in range(0, len(order), width):
            states = order[start : start + width]
            following = order[start + width : start + 2 * width]
            if len(following) < len(states):  # end of the stream: terminal transitions
                following = np.concatenate([following, states[len(following) :]])
                done = np.zeros(len(states), dtype=np.float32)
                done[len(order[start + width : start + 2 * width]) :] = 1.0
            else:
                done = np.zeros(len(states), dtype=np.float32)
            with torch.no_grad():
                greedy = network(x_all[states]).argmax(dim=1).numpy()
            explore = rng.random(len(states)) < epsilon
            actions = np.where(explore, rng.integers(0, n_classes, len(states)), greedy)
            truth = y_train[states]
            reward = np.where(actions == truth, 1.0, -1.0) * rewards[truth]
            episode_rewards.extend(reward.tolist())
            slots = (cursor + np.arange(len(states))) % capacity
            buffer_state[slots], buffer_next[slots] = states, following
            buffer_action[slots], buffer_reward[slots], buffer_done[slots] = actions, reward, done
            cursor = (cursor + len(states)) % capacity
            stored = min(capacity, stored + len(states))
            if stored < config.batch_size:
                continue
            for _ in range(config.updates_per_step):
                pick = rng.integers(0, stored, config.batch_size)
                s = x_all[buffer_state[pick]]
                s_next = x_all[buffer_next[pick]]
                a = torch.tensor(buffer_action[pick])
                r = torch.tensor(buffer_reward[pick])
                d = torch.tensor(buffer_done[pick])
                with torch.no_grad():
                    bootstrap = target(s_next).max(dim=1).values
                    goal = r + config.gamma * (1.0 - d) * bootstrap
                predicted = network(s).gather(1, a.unsqueeze(1)).squeeze(1)
                loss = torch.nn.functional.smooth_l1_loss(predicted, goal)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
                optimizer.step()
                losses.append(loss.item())
                updates += 1
                if updates % config.target_sync_updates == 0:
                    target.load_state_dict(network.state_dict())
        val_pred = q_values(network, x_val).argmax(axis=1)
        f1 = _macro_f1(y_val, val_pred, n_classes)
        stats = EpisodeStats(
            episode=episode,
            epsilon=round(epsilon, 4),
            mean_reward=float(np.mean(episode_rewards)),
            loss=float(np.mean(losses)) if losses else math.nan,
            val_macro_f1=f1,
        )
        history.append(stats)
        if f1 > best_f1:
            best_f1, best_episode = f1, episode
            best_state = copy.deepcopy(network.state_dict())
        if on_episode is not None:
            on_episode(stats)
    network.load_state_dict(best_state)
    network.eval()
    temperature = fit_temperature(q_values(network, x_val), y_val)
    return DQNResult(network, temperature, best_episode, best_f1, history)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation negative log-likelihood (golden section
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
            self.q = network
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
