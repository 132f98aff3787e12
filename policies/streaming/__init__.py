"""Data, training and evaluation of the streaming video model (:mod:`perception.streaming`, issue 19).

:mod:`~policies.streaming.data` (labelled twin videos: pose, progress, success, events from the twin's state),
:mod:`~policies.streaming.clips` (training clips with frozen / replayed / spliced camera segments),
:mod:`~policies.streaming.train` (the training loop, checkpoints, resume), :mod:`~policies.streaming.evaluate`
(held-out figures, sinks vs window, detection delays) and :mod:`~policies.streaming.run_config` (the scripts' schemas).
"""
