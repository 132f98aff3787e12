"""TOPReward: task progress from a vision-language model's log-probability of "True" (DESIGN.md section 6).

Backends implement :class:`~policies.rewards.protocol.TrueScorer`; ``native`` (:mod:`policies.rewards.native`) is a
small VLM trained by the stack on twin rollouts (:mod:`policies.rewards.rollouts`, :mod:`policies.rewards.train_native`).
"""

from policies.rewards.protocol import PROMPT, TrueScorer

__all__ = ["PROMPT", "TrueScorer"]
