"""Flow-matching action-chunk policy (registry name ``flow_matching``)."""

from policies.flow_matching.config import FlowMatchingConfig
from policies.flow_matching.model import FlowMatchingPolicy

__all__ = ["FlowMatchingConfig", "FlowMatchingPolicy"]
