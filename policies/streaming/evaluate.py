"""Evaluation of the streaming video model on held-out twin streams (issue 19, must-show 2 and 3).

Each held-out episode is run as one stream, three times: clean (sensor noise only), with a frozen segment, and with a
replayed segment (:func:`policies.streaming.clips.inject`, ``segment_frames`` long, at a position drawn from the
episode's seed). Figures (``name: value``), for the model as configured and, prefixed ``window_``, the same weights
with ``memory=window`` (no sinks), so the sinks' value is measured:

* ``pose_err_mm`` / ``pose_err_deg``: mean block position / yaw error over the clean frames with the block on the
  table;
* ``progress_voc``: mean over streams of Spearman(predicted, true progress) (:func:`policies.rewards.topreward.voc`:
  a constant series counts 0);
* ``success_auc``: ROC-AUC of the success probability over all clean frames
  (:func:`policies.rewards.evaluate.roc_auc`; nan when the frames hold one class only);
* ``event_f1_<event>``: per-frame F1 at the event's threshold (nan without positives and predictions); the
  camera event over the clean, frozen and replayed streams together, the others over the clean ones. The threshold
  (``event_threshold_<event>``) is the one with the best F1 on ``n_calibration`` streams of ``calibration_split``
  (training streams: events are rare, so a probability of 0.5 is not where a trained model calls them), else
  ``threshold``;
* ``frozen_detect_s`` / ``replay_detect_s``: mean seconds from a segment's first frame to the first frame in it where
  the camera event's probability exceeds its threshold (a miss counts the whole segment), and ``frozen_detect_rate``
  / ``replay_detect_rate``, the fraction flagged within the segment at all.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from perception.streaming import EVENTS, StreamingModel
from policies.rewards.evaluate import roc_auc
from policies.rewards.topreward import voc
from policies.streaming.clips import CAMERA, Clip, add_noise, collate, cut, inject
from policies.streaming.data import EVENT_INDEX, StreamEpisode, load_streams

VARIANTS = ("clean", "frozen", "replay")


@dataclass
class StreamEvalConfig:
    """What the evaluation runs (frames, grey levels, probabilities)."""

    split: str = "heldout"  # the split of the data root evaluated
    n_streams: int = 0  # episodes evaluated; 0: all of the split
    segment_frames: int = 20  # length of the injected frozen / replayed segment (2 s at 10 fps)
    noise_std: float = 2.0  # sensor noise on every frame (as in training)
    threshold: float = 0.5  # event probability above which an event is called, without calibration streams
    calibration_split: str = "train"  # streams the event thresholds are chosen on ("": use threshold)
    n_calibration: int = 30  # streams of calibration_split used (the first, by seed)
    compare_memories: list[str] = field(default_factory=lambda: ["window"])  # also reported as <memory>_<figure>
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_calibration < 1:
            raise ValueError(f"eval.n_calibration must be >= 1, got {self.n_calibration}")
        if self.n_streams < 0 or self.segment_frames < 1 or self.noise_std < 0 or not 0 < self.threshold < 1:
            raise ValueError(f"eval.n_streams must be >= 0, segment_frames >= 1, noise_std >= 0 and threshold in "
                             f"(0, 1); got {self.n_streams}, {self.segment_frames}, {self.noise_std}, {self.threshold}")


def stream_variants(episode: StreamEpisode, cfg: StreamEvalConfig) -> dict[str, tuple[Clip, int]]:
    """The clean stream of ``episode`` and, when it is long enough (> 3 segments), its frozen and replayed versions;
    each with the first injected frame (0 for the clean one). Deterministic in the episode's seed."""
    rng = np.random.default_rng([cfg.seed, episode.seed])
    n, length = len(episode.images), cfg.segment_frames
    clean = cut(episode, 0, n)
    clean.images = add_noise(clean.images, cfg.noise_std, rng)
    variants = {"clean": (clean, 0)}
    if n > 3 * length:
        at = int(rng.integers(length + 1, n - length + 1))
        for kind in ("frozen", "replay"):
            clip = dataclasses.replace(clean, images=clean.images.copy(), events=clean.events.copy())
            inject(clip, kind, at, length, np.array(at - length - 1) if kind == "replay" else None)
            variants[kind] = (clip, at)
    return variants


@torch.no_grad()
def predict(model: StreamingModel, clip: Clip) -> dict[str, np.ndarray]:
    """Per-frame answers of ``model`` on ``clip`` as one stream: ``pose`` (N, 3), ``progress``, ``success`` (N,),
    ``events`` (N, len(EVENTS)) probabilities."""
    frames, tokens, _ = collate([clip], model.config.max_instruction_tokens)
    weights = model.embed.weight
    out = model.eval()(frames.to(weights.device, weights.dtype), tokens.to(weights.device))
    return {"pose": out.pose[0].float().cpu().numpy(), "progress": out.progress[0].float().cpu().numpy(),
            "success": out.success_prob[0].float().cpu().numpy(),
            "events": out.event_logits[0].sigmoid().float().cpu().numpy()}


def f1(pred: np.ndarray, label: np.ndarray) -> float:
    """F1 of boolean ``pred`` against ``label``; nan when both are all False (nothing to find, nothing found)."""
    tp, fp, fn = int((pred & label).sum()), int((pred & ~label).sum()), int((~pred & label).sum())
    return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def detect_delay(prob: np.ndarray, start: int, length: int, threshold: float) -> tuple[int, bool]:
    """Frames from ``start`` to the first frame of ``start .. start + length`` with ``prob`` > ``threshold``, and
    whether there is one (a miss gives ``length``)."""
    hits = np.flatnonzero(prob[start:start + length] > threshold)
    return (int(hits[0]), True) if hits.size else (length, False)


def _safe_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC, nan when the labels hold one class."""
    return roc_auc(scores, labels) if 0 < labels.sum() < len(labels) else float("nan")


@dataclass
class StreamPredictions:
    """The model's per-frame answers on every variant of some streams, with the labels they are judged against."""

    rows: dict[str, list[np.ndarray]]  # clean streams: xy / yaw errors, success, events; camera over all variants
    vocs: list[float]  # progress VOC per clean stream
    segments: dict[str, list[tuple[np.ndarray, int]]]  # frozen / replay: (camera probability, first injected frame)
    segment_frames: int  # length of the injected segments
    fps: float


def predict_streams(model: StreamingModel, episodes: Sequence[StreamEpisode], cfg: StreamEvalConfig
                    ) -> StreamPredictions:
    """Runs ``model`` over every variant (:func:`stream_variants`) of ``episodes``.

    Raises:
        ValueError: no episodes.
    """
    if not episodes:
        raise ValueError("the streaming evaluation needs at least one episode")
    rows: dict[str, list] = {k: [] for k in ("xy", "yaw", "succ_p", "succ_y", "ev_p", "ev_y", "cam_p", "cam_y")}
    vocs: list[float] = []
    segments: dict[str, list[tuple[np.ndarray, int]]] = {"frozen": [], "replay": []}
    for episode in episodes:
        for kind, (clip, at) in stream_variants(episode, cfg).items():
            p = predict(model, clip)
            rows["cam_p"].append(p["events"][:, CAMERA])
            rows["cam_y"].append(clip.events[:, CAMERA])
            if kind != "clean":
                segments[kind].append((p["events"][:, CAMERA], at))
                continue
            on_table = ~clip.events[:, EVENT_INDEX["block_off_table"]]
            rows["xy"].append(np.linalg.norm(p["pose"][on_table, :2] - clip.pose[on_table, :2], axis=-1))
            yaw = p["pose"][on_table, 2] - clip.pose[on_table, 2]
            rows["yaw"].append(np.abs((yaw + np.pi) % (2 * np.pi) - np.pi))
            vocs.append(voc(p["progress"], clip.progress))
            rows["succ_p"].append(p["success"])
            rows["succ_y"].append(clip.success)
            rows["ev_p"].append(p["events"])
            rows["ev_y"].append(clip.events)
    return StreamPredictions(rows, vocs, segments, cfg.segment_frames, episodes[0].fps)


def _event_scores(cat: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per event of :data:`EVENTS`: (probabilities, bool labels) over the frames it is judged on (the camera event
    over every variant, the others over the clean streams), from the concatenated rows of a prediction."""
    return [(cat["cam_p"], cat["cam_y"].astype(bool)) if i == CAMERA else
            (cat["ev_p"][:, i], cat["ev_y"][:, i].astype(bool)) for i in range(len(EVENTS))]


def choose_thresholds(pred: StreamPredictions, default: float) -> np.ndarray:
    """Per event, the probability threshold (of 0.05, 0.10, ..., 0.95) with the best F1 on ``pred``; ``default``
    for an event without positives there. The thresholds are chosen on training streams and applied to held-out
    ones, as TOPReward's success threshold is."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    chosen = np.full(len(EVENTS), default)
    for i, (prob, label) in enumerate(_event_scores({k: np.concatenate(v) for k, v in pred.rows.items()})):
        if label.any():
            chosen[i] = grid[int(np.argmax([f1(prob > g, label) for g in grid]))]
    return chosen


def figures_of(pred: StreamPredictions, thresholds: np.ndarray) -> dict[str, float]:
    """The module docstring's figures of ``pred``, each event called above its entry of ``thresholds``."""
    cat = {k: np.concatenate(v) for k, v in pred.rows.items()}
    figures = {"pose_err_mm": 1000 * float(np.mean(cat["xy"])) if cat["xy"].size else float("nan"),
               "pose_err_deg": float(np.degrees(np.mean(cat["yaw"]))) if cat["yaw"].size else float("nan"),
               "progress_voc": float(np.mean(pred.vocs)),
               "success_auc": _safe_auc(cat["succ_p"], cat["succ_y"].astype(bool))}
    for name, threshold, (prob, label) in zip(EVENTS, thresholds, _event_scores(cat)):
        figures[f"event_f1_{name}"] = f1(prob > threshold, label)
    for kind, found in pred.segments.items():
        delays = [detect_delay(prob, at, pred.segment_frames, thresholds[CAMERA]) for prob, at in found]
        figures[f"{kind}_detect_s"] = float(np.mean([d for d, _ in delays]) / pred.fps) if delays else float("nan")
        figures[f"{kind}_detect_rate"] = float(np.mean([hit for _, hit in delays])) if delays else float("nan")
    return figures


def with_memory(model: StreamingModel, memory: str) -> StreamingModel:
    """The same weights under another memory policy (``sinks`` | ``window`` | ``full``), in eval mode."""
    other = StreamingModel(dataclasses.replace(model.config, memory=memory))
    other.load_state_dict(model.state_dict())
    return other.to(model.embed.weight.device).eval()


def evaluate_streaming(model: StreamingModel, episodes: Sequence[StreamEpisode], cfg: StreamEvalConfig,
                       calibration: Sequence[StreamEpisode] = ()) -> dict[str, float]:
    """The module docstring's figures of ``model`` as configured on ``episodes``, then of the same weights under each
    of ``cfg.compare_memories`` other than its own, those prefixed ``<memory>_``. Each event is called above the
    threshold :func:`choose_thresholds` picks on the ``calibration`` streams (reported as
    ``event_threshold_<event>``), or above ``cfg.threshold`` without them.

    Raises:
        ValueError: no episodes.
    """
    episodes = list(episodes)[:cfg.n_streams] if cfg.n_streams else list(episodes)
    figures: dict[str, float] = {}
    for memory in dict.fromkeys([model.config.memory, *cfg.compare_memories]):
        variant = model if memory == model.config.memory else with_memory(model, memory)
        thresholds = (choose_thresholds(predict_streams(variant, calibration, cfg), cfg.threshold) if calibration
                      else np.full(len(EVENTS), cfg.threshold))
        found = figures_of(predict_streams(variant, episodes, cfg), thresholds)
        found |= {f"event_threshold_{name}": float(t) for name, t in zip(EVENTS, thresholds)}
        prefix = "" if memory == model.config.memory else f"{memory}_"
        figures |= {f"{prefix}{name}": value for name, value in found.items()}
    return figures


def calibration_streams(root: str, cfg: StreamEvalConfig) -> list[StreamEpisode]:
    """The streams ``cfg`` chooses event thresholds on: the first ``n_calibration`` of ``calibration_split`` under
    ``root``; none when the split is "" or holds no streams (a warning then says the fixed ``threshold`` is used)."""
    if not cfg.calibration_split:
        return []
    try:
        return load_streams(root, cfg.calibration_split, cfg.n_calibration)
    except FileNotFoundError as err:
        warnings.warn(f"eval.calibration_split: {err}; events are called at eval.threshold={cfg.threshold}",
                      stacklevel=2)
        return []
