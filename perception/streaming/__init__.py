"""Streaming video reasoning with bounded memory (issue 19, DESIGN.md section 6): a causal transformer over camera
frames that answers at every frame (block pose, progress, success, events) with attention sinks + a recent window.

    model = StreamingModel(StreamingConfig())          # or load_streaming(checkpoint_dir)
    estimator = StreamingEstimator(model)              # a perception Estimator; .step(image, t) gives every head
"""

from perception.streaming.cache import KVCache
from perception.streaming.checkpoint import load_streaming, save_streaming
from perception.streaming.config import EVENTS, MEMORY_MODES, StreamingConfig
from perception.streaming.estimator import StreamingEstimator
from perception.streaming.loss import StreamTargets, streaming_loss
from perception.streaming.model import StreamingModel, StreamOutputs, forward_flops_per_frame, tokenize
from perception.streaming.monitor import MonitorAnswer, MonitorConfig, StreamMonitor

__all__ = ["EVENTS", "MEMORY_MODES", "KVCache", "MonitorAnswer", "MonitorConfig", "StreamMonitor", "StreamOutputs",
           "StreamTargets", "StreamingConfig", "StreamingEstimator", "StreamingModel", "forward_flops_per_frame",
           "load_streaming", "save_streaming", "streaming_loss", "tokenize"]
