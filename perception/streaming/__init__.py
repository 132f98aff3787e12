"""Streaming video reasoning with bounded memory (issue 19, DESIGN.md section 6): a causal transformer over camera
frames that answers at every frame (block pose, progress, success, events) with attention sinks + a recent window.

    model = StreamingModel(StreamingConfig())          # or load_streaming(checkpoint_dir)
    estimator = StreamingEstimator(model)              # a perception Estimator; .step(image, t) gives every head
"""

from perception.streaming.cache import KVCache
from perception.streaming.config import EVENTS, MEMORY_MODES, StreamingConfig
from perception.streaming.model import StreamingModel, StreamOutputs, forward_flops_per_frame, tokenize

__all__ = ["EVENTS", "MEMORY_MODES", "KVCache", "StreamOutputs", "StreamingConfig", "StreamingModel",
           "forward_flops_per_frame", "tokenize"]
