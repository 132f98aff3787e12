"""TOPReward: task progress from a vision-language model's log-probability of ``True`` (DESIGN.md section 6).

:mod:`~policies.rewards.protocol` (the backend interface and the prompt), :mod:`~policies.rewards.topreward` (the
method: resampling, prefixes, normalisation, VOC, success detection, GVL baseline), backends
:mod:`~policies.rewards.hf` (transformers Qwen-VL) and :mod:`~policies.rewards.native` (a small VLM trained by the
stack on twin rollouts: :mod:`~policies.rewards.rollouts`, :mod:`~policies.rewards.train_native`),
:mod:`~policies.rewards.config` (``conf/reward/*`` schema), :mod:`~policies.rewards.backends` (``make_scorer``: the
scorer a config names), :mod:`~policies.rewards.evaluate` (VOC, static-frame VOC, success AUC, GVL, the plot:
``scripts/eval_reward.py``), :mod:`~policies.rewards.rabc` (reward-aligned BC) and :mod:`~policies.rewards.improve`
(the on-policy loop: :mod:`~policies.rewards.policy_rollouts`, :mod:`~policies.rewards.improve_config`;
``scripts/improve.py``).
"""
