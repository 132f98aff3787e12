"""Scripted PushT expert: a closed-loop pushing controller that picks contacts by their quasi-static effect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.pusht_geometry import TShape, wrap_angle

MAX_SAMPLED_PATH = 2.0  # m: longer pusher paths are clipped to the T's neighbourhood before sampling


@dataclass
class ExpertConfig:
    """Gains and noise of the scripted PushT expert (units m, rad).

    ``noise_std`` and ``random_contact_prob`` make deliberately worse demonstrations: Gaussian noise on every
    action, and sometimes pushing at a random contact instead of the best one. ``execution_noise_std`` makes
    better ones for imitation (DART, Laskey et al. 2017): noise on the action executed (:meth:`PushTExpert.explore`)
    while the recorded action stays the expert's, so the demos visit the states a slightly wrong policy reaches and
    show how to recover from them.
    """

    push_speed: float = 0.02  # largest pusher advance into the block per control step (m)
    push_gain: float = 0.4  # advance per step as a fraction of the remaining pose error
    min_push: float = 0.006  # smallest push advance (m), for fine corrections near the goal
    travel_speed: float = 0.045  # pusher speed when moving between contacts (m per control step)
    angle_weight: float = 0.06  # metres of error that one radian of angle error is worth when choosing contacts
    contact_spacing: float = 0.01  # spacing of candidate contacts along the T's outline (m)
    clearance: float = 0.008  # gap kept between pusher and block while travelling (m)
    keep_score: float = 0.55  # keep pushing at the current contact while its alignment stays above this
    noise_std: float = 0.0  # std of Gaussian action noise (m)
    random_contact_prob: float = 0.0  # probability of choosing a random contact at each re-selection
    execution_noise_std: float = 0.0  # std of Gaussian noise on the executed, not the recorded, action (m; DART)

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.execution_noise_std < 0 or not 0 <= self.random_contact_prob <= 1:
            raise ValueError(
                f"expert.noise_std and expert.execution_noise_std must be >= 0 and expert.random_contact_prob in "
                f"[0, 1], got {self.noise_std}, {self.execution_noise_std}, {self.random_contact_prob}"
            )


class PushTExpert:
    """Pushes the T to the goal from state observations (``observation.state``, ``observation.environment_state``).

    Each step it computes the planar twist that would move the block's centre of mass and angle towards the goal,
    and picks the contact on the T's outline whose pushing wrench, mapped through an ellipsoidal limit surface,
    best produces that twist. It travels to the contact around the block (never through it), then pushes into
    it, re-selecting a contact when the current one stops helping. Actions are pusher targets ``(x, y)`` (m).
    """

    def __init__(
        self,
        shape: TShape,
        goal_pose: np.ndarray,
        pusher_radius: float,
        config: ExpertConfig | None = None,
        seed: int | None = None,
        position_goal: bool = False,
        simulator: Any = None,
    ) -> None:
        self.shape = shape
        self.goal = np.asarray(goal_pose, dtype=float)
        self.position_goal = position_goal  # goal_pose[:2] is where the T's area centroid goes; its angle is free
        self.radius = pusher_radius
        self.config = config or ExpertConfig()
        contacts, normals = shape.boundary_points(self.config.contact_spacing)
        corners = np.concatenate([np.abs(shape.centers) + shape.half_sizes])
        self._reach = float(np.linalg.norm(corners, axis=1).max())  # m: the T lies within this of its origin
        self.bound = self._reach + pusher_radius + 2 * self.config.clearance
        # Keep contacts the pusher can reach: touching there and coming in along the normal must not hit the T.
        reachable = [
            self._segment_clear(c + n * (pusher_radius + 1e-3), c + n * self.bound, margin=pusher_radius)
            for c, n in zip(contacts, normals)
        ]
        self.contacts, self.normals = contacts[reachable], normals[reachable]
        areas = 4 * shape.half_sizes[:, 0] * shape.half_sizes[:, 1]
        self.com = (shape.centers * areas[:, None]).sum(0) / areas.sum()
        # Characteristic length of the limit surface: radius of gyration of the T about its centroid (m).
        second_moment = sum(
            a * (np.sum((c - self.com) ** 2) + (4 * h[0] ** 2 + 4 * h[1] ** 2) / 12)
            for a, c, h in zip(areas, shape.centers, shape.half_sizes)
        )
        self.gyration = float(np.sqrt(second_moment / areas.sum()))
        self.rng = np.random.default_rng(seed)
        self.contact: int | None = None
        self.simulator = simulator  # the PushTEnv whose true state stands in for unobserved keys (see for_env)

    @classmethod
    def for_env(cls, env, config: ExpertConfig | None = None, seed: int | None = None) -> PushTExpert:
        """Builds the expert for a ``PushTEnv`` (reads its T geometry, goal and pusher radius).

        When the env does not observe the block or pusher (e.g. an image env), the expert reads them from the
        simulator: it is a privileged demonstrator, as a human teleoperating from a rendering. The goal is read from
        the env at every step, so an env that draws a new goal per episode (``realsim/PushTTargets-v0``) is followed;
        an env whose ``position_goal`` is true is solved for position only.
        """
        env = env.unwrapped
        radius = float(env.model.geom("pusher").size[0])
        position_goal = bool(getattr(env, "position_goal", False))
        return cls(env.shape, env.goal_pose, radius, config=config, seed=seed, position_goal=position_goal,
                   simulator=env)

    def reset(self, seed: int | None = None) -> None:
        """Forgets the current contact; reseeds the noise generator when ``seed`` is given."""
        self.contact = None
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def explore(self, action: np.ndarray) -> np.ndarray:
        """The action to execute for the recorded ``action`` (pusher target, m): it plus Gaussian noise of std
        ``execution_noise_std`` (DART), unchanged when that is 0."""
        if self.config.execution_noise_std == 0:
            return action
        return (action + self.rng.normal(0.0, self.config.execution_noise_std, size=action.shape)).astype(action.dtype)

    # ---------------------------------------------------------------------------------------------- helpers
    def _pose(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Pusher xy and block pose ``(x, y, theta)``: from ``obs``, else from the simulator (see ``for_env``)."""
        if "observation.environment_state" in obs:
            env_state = np.asarray(obs["observation.environment_state"], dtype=float)
            pose = np.array([env_state[0], env_state[1], np.arctan2(env_state[3], env_state[2])])
        elif self.simulator is not None:
            pose = np.asarray(self.simulator.block_pose, dtype=float)
        else:
            raise KeyError("the expert needs observation.environment_state (or an env, through PushTExpert.for_env)")
        if "observation.state" in obs:
            return np.asarray(obs["observation.state"], dtype=float), pose
        if self.simulator is None:
            raise KeyError("the expert needs observation.state (or an env, through PushTExpert.for_env)")
        return np.asarray(self.simulator.pusher_xy, dtype=float), pose

    @staticmethod
    def _rot(theta: float) -> np.ndarray:
        return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    def _desired_twist(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The error to correct: block-frame ``(vx, vy, angle_weight * angle)`` (m) and world ``(dx, dy, dtheta)``."""
        rot = self._rot(pose[2])
        com_now = pose[:2] + rot @ self.com
        if self.position_goal:
            com_goal, angle_err = self.goal[:2], 0.0
        else:
            com_goal = self.goal[:2] + self._rot(self.goal[2]) @ self.com
            angle_err = wrap_angle(self.goal[2] - pose[2])
        v_world = com_goal - com_now
        twist_block = np.concatenate([rot.T @ v_world, [self.config.angle_weight * angle_err]])
        return twist_block, np.concatenate([v_world, [angle_err]])

    def _scores(self, twist: np.ndarray) -> np.ndarray:
        """Alignment (cosine) of each contact's quasi-static pushing twist with the desired twist."""
        force = -self.normals  # push into the block
        arm = self.contacts - self.com
        torque = arm[:, 0] * force[:, 1] - arm[:, 1] * force[:, 0]
        # Ellipsoidal limit surface: twist ~ (f, tau / rho^2); scaled by rho to compare with (v, rho * omega).
        motion = np.column_stack([force, torque / self.gyration])
        motion /= np.linalg.norm(motion, axis=1, keepdims=True)
        target = twist.copy()
        target[2] *= self.gyration / self.config.angle_weight
        return motion @ (target / (np.linalg.norm(target) + 1e-12))

    def _segment_clear(self, a: np.ndarray, b: np.ndarray, margin: float | None = None) -> bool:
        """Whether a pusher moving from ``a`` to ``b`` (block frame) stays ``margin`` m clear of the T."""
        margin = self.radius + 0.5 * self.config.clearance if margin is None else margin
        d = b - a
        if float(d @ d) > MAX_SAMPLED_PATH ** 2:
            # A block far away (shoved off the table, metres from the pusher): only the part of the segment inside
            # the disc that holds the grown T can touch it, so sample just that part, keeping the cost bounded.
            radius = self._reach + margin * np.sqrt(2.0)
            dd, ad = float(d @ d), float(a @ d)
            disc = ad * ad - dd * (float(a @ a) - radius * radius)
            if disc <= 0.0:
                return True
            root = np.sqrt(disc)
            t0, t1 = max(0.0, (-ad - root) / dd), min(1.0, (-ad + root) / dd)
            if t0 > t1:
                return True
            a, b = a + t0 * d, a + t1 * d
        n = max(2, int(np.linalg.norm(b - a) / 0.004) + 1)
        pts = a + (b - a) * np.linspace(0, 1, n)[:, None]
        return not np.any(self.shape.contains(pts, margin=margin))

    def _travel_target(self, pusher_b: np.ndarray, goal_b: np.ndarray, ray_dir: np.ndarray) -> np.ndarray:
        """Next block-frame waypoint from the pusher towards ``goal_b``, going around the T when blocked."""
        if self._segment_clear(pusher_b, goal_b):
            return goal_b
        entry = goal_b + ray_dir * max(0.0, self.bound - np.dot(goal_b, ray_dir))  # where the approach ray leaves
        if self._segment_clear(pusher_b, entry):
            return entry
        r = np.linalg.norm(pusher_b)
        if r < self.bound - 1e-3:  # first get out to the travel circle
            return pusher_b / max(r, 1e-9) * self.bound
        phi, phi_goal = np.arctan2(pusher_b[1], pusher_b[0]), np.arctan2(entry[1], entry[0])
        step = self.config.travel_speed / self.bound
        dphi = float(np.clip(wrap_angle(phi_goal - phi), -step, step))
        return self.bound * np.array([np.cos(phi + dphi), np.sin(phi + dphi)])

    # ------------------------------------------------------------------------------------------------- act
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Pusher target ``(x, y)`` (m, world) for the current observation."""
        cfg = self.config
        if self.simulator is not None:
            self.goal = np.asarray(self.simulator.goal_pose, dtype=float)
        pusher, pose = self._pose(obs)
        twist_b, err_world = self._desired_twist(pose)
        scores = self._scores(twist_b)
        if self.contact is None or scores[self.contact] < cfg.keep_score:
            if self.rng.random() < cfg.random_contact_prob:
                self.contact = int(self.rng.integers(len(scores)))
            else:
                self.contact = int(np.argmax(scores))
        contact, normal = self.contacts[self.contact], self.normals[self.contact]
        rot = self._rot(pose[2])
        pusher_b = rot.T @ (pusher - pose[:2])
        touch = contact + normal * self.radius  # pusher centre when touching the contact
        offset = pusher_b - touch
        along_normal = np.dot(offset, normal)
        lateral = np.linalg.norm(offset - along_normal * normal)
        if lateral < 0.006 and -0.004 < along_normal < 0.02:
            error = np.linalg.norm(np.concatenate([err_world[:2], [cfg.angle_weight * err_world[2]]]))
            advance = float(np.clip(cfg.push_gain * error, cfg.min_push, cfg.push_speed))
            target_b = touch - normal * advance
        else:
            pre_contact = touch + normal * cfg.clearance
            target_b = self._travel_target(pusher_b, pre_contact, normal)
            delta = target_b - pusher_b
            dist = np.linalg.norm(delta)
            if dist > cfg.travel_speed:
                target_b = pusher_b + delta * (cfg.travel_speed / dist)
        action = pose[:2] + rot @ target_b
        if cfg.noise_std > 0:
            action = action + self.rng.normal(0.0, cfg.noise_std, size=2)
        return action.astype(np.float32)
