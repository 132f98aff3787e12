"""Vision-language-action policy (registry name ``vla``): images + instruction + state -> flow-matching chunks.

Backbones by config: ``native`` (from scratch, ``policy=vla_tiny``) and ``hf`` (a SmolVLM / Idefics3-class
transformers model, ``policy=vla_hf policy.backbone.path=...``).
"""

from policies.vla.config import BackboneConfig, VLAConfig
from policies.vla.model import VLAPolicy
from policies.vla.tokenizer import WordTokenizer

__all__ = ["BackboneConfig", "VLAConfig", "VLAPolicy", "WordTokenizer"]
