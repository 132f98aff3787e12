"""Training windows over a dataset: a short observation history and an action chunk per frame.

Timeline for item ``t`` (n_obs_steps = To, horizon = H)::

    observations  t-To+1 ... t          (before the episode start: the first frame is repeated)
    actions                  t ... t+H-1  (past the episode end: the last action is repeated,
                                           and ``action_is_pad`` is True there)

Windows never cross an episode boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from policies.datasets.reader import LeRobotDatasetReader


class TaskBatch(list):
    """The instructions of a batch, one ``str`` per sample: a plain ``list[str]`` whose ``to(...)`` returns itself.

    ``to`` lets code that moves every value of a batch to a device (``{k: v.to(device) ...}``) pass the
    strings through unchanged, as ``torch.utils.data.default_collate`` leaves strings as a list.
    """

    def to(self, *args: Any, **kwargs: Any) -> TaskBatch:
        """This batch itself: strings live on no device."""
        return self


class ChunkWindowDataset(Dataset):
    """``torch`` dataset with one item per frame of every episode of a :class:`LeRobotDatasetReader`.

    An item holds, for each ``obs_keys`` entry, the frames t-To+1..t stacked on a leading time axis
    (images as float32 (To, C, H, W) in [0, 1], low-dim as float32 (To, *shape)) and
    ``<key>_is_pad`` (bool (To,), True where the first frame was repeated); ``action``
    (float32 (H, *shape)) over t..t+H-1 and ``action_is_pad`` (bool (H,)); plus ``index``,
    ``episode_index`` and ``task`` (the instruction string).

    Raises:
        KeyError: if an obs key or ``action_key`` is not a feature of the dataset.
        ValueError: if n_obs_steps or horizon < 1, or a key is a string feature.
    """

    def __init__(
        self,
        dataset: LeRobotDatasetReader,
        obs_keys: Sequence[str],
        n_obs_steps: int,
        horizon: int,
        action_key: str = "action",
    ) -> None:
        """Index the episodes and load (decode) the arrays of the requested keys."""
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {n_obs_steps}, {horizon}")
        for key in [*obs_keys, action_key]:
            if key not in dataset.features:
                raise KeyError(f"{key!r} is not a feature of {dataset.root}; features are {sorted(dataset.features)}")
            if dataset.features[key]["dtype"] == "string":
                raise ValueError(f"{key!r} is a string feature and cannot be stacked")
        if dataset.features[action_key]["dtype"] in ("video", "image"):
            raise ValueError(f"action_key {action_key!r} must be a low-dim feature")
        self.dataset = dataset
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        self._visual = {k for k in self.obs_keys if dataset.features[k]["dtype"] in ("video", "image")}
        self._arrays = {k: dataset.array(k) for k in {*self.obs_keys, action_key}}
        self._episode = np.repeat(np.arange(dataset.num_episodes), dataset.episode_lengths)
        self._start = np.repeat(dataset.episode_starts, dataset.episode_lengths)
        self._last = self._start + np.repeat(dataset.episode_lengths, dataset.episode_lengths) - 1
        # the instruction of every frame (object array of str), from task_index into meta/tasks.parquet
        self._frame_tasks = np.array(dataset.tasks, dtype=object)[dataset.array("task_index")]

    def __len__(self) -> int:
        return self.dataset.num_frames

    def indices(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Global frame indices (obs, action) of item ``t`` and their padding masks."""
        if not 0 <= t < len(self):
            raise IndexError(f"item {t} out of range [0, {len(self)})")
        obs_raw = np.arange(t - self.n_obs_steps + 1, t + 1)
        act_raw = np.arange(t, t + self.horizon)
        obs_pad, act_pad = obs_raw < self._start[t], act_raw > self._last[t]
        return np.maximum(obs_raw, self._start[t]), np.minimum(act_raw, self._last[t]), obs_pad, act_pad

    def __getitem__(self, t: int) -> dict[str, Any]:
        obs_idx, act_idx, obs_pad, act_pad = self.indices(int(t))
        item: dict[str, Any] = {}
        for key in self.obs_keys:
            values = torch.from_numpy(np.ascontiguousarray(self._arrays[key][obs_idx]))
            if key in self._visual:
                values = values.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
            item[key] = values.to(torch.float32)
            item[f"{key}_is_pad"] = torch.from_numpy(obs_pad)
        item[self.action_key] = torch.from_numpy(self._arrays[self.action_key][act_idx].astype(np.float32))
        item[f"{self.action_key}_is_pad"] = torch.from_numpy(act_pad)
        item["index"] = int(t)
        item["episode_index"] = int(self._episode[t])
        item["task"] = self.dataset.frame_task(int(t))
        return item

    def get_batch(self, items: np.ndarray) -> dict[str, Any]:
        """Items ``items`` stacked into one batch, gathered in a few vectorised index operations.

        Same content as collating ``[self[t] for t in items]`` for the tensor keys and ``task`` (a
        :class:`TaskBatch`, the list of the items' instructions); no ``index`` or ``episode_index``.
        Used by the trainer, where per-item Python costs dominate on a CPU.
        """
        t = np.asarray(items, dtype=np.int64)
        if t.ndim != 1 or (t.size and (t.min() < 0 or t.max() >= len(self))):
            raise IndexError(f"batch items must be a 1-D array of indices in [0, {len(self)})")
        start, last = self._start[t, None], self._last[t, None]
        obs_raw = t[:, None] + np.arange(1 - self.n_obs_steps, 1)
        act_raw = t[:, None] + np.arange(self.horizon)
        obs_idx, act_idx = np.maximum(obs_raw, start), np.minimum(act_raw, last)
        batch: dict[str, torch.Tensor] = {}
        for key in self.obs_keys:
            values = torch.from_numpy(np.ascontiguousarray(self._arrays[key][obs_idx]))
            if key in self._visual:
                values = values.permute(0, 1, 4, 2, 3).to(torch.float32).div_(255.0)
            batch[key] = values.to(torch.float32)
            batch[f"{key}_is_pad"] = torch.from_numpy(obs_raw < start)
        batch[self.action_key] = torch.from_numpy(self._arrays[self.action_key][act_idx].astype(np.float32))
        batch[f"{self.action_key}_is_pad"] = torch.from_numpy(act_raw > last)
        batch["task"] = TaskBatch(self._frame_tasks[t].tolist())
        return batch

    def relative_action_stats(self, reference_key: str) -> dict[str, np.ndarray]:
        """min/max/mean/std, per chunk index, of the action chunks as offsets from ``reference_key``'s latest frame.

        Returns arrays of shape ``(horizon, *action_shape)``: the normalisation statistics of a policy whose
        ``relative_action_key`` is ``reference_key``. Raises KeyError if the key is not one of ``obs_keys``.
        """
        if reference_key not in self.obs_keys:
            raise KeyError(f"{reference_key!r} is not among the window's obs_keys {self.obs_keys}")
        t = np.arange(len(self))
        act_idx = np.minimum(t[:, None] + np.arange(self.horizon), self._last[:, None])
        offsets = self._arrays[self.action_key][act_idx] - self._arrays[reference_key][t][:, None]
        offsets = offsets.astype(np.float64)
        return {
            "min": offsets.min(0),
            "max": offsets.max(0),
            "mean": offsets.mean(0),
            "std": offsets.std(0),
            "count": np.array([len(t)]),
        }
