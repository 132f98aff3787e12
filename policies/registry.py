"""Look up and build policies by name; the name is also the policy's folder, ``policies/<name>/``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from policies.base import _REGISTRY, Policy, PolicyConfig


def policy_class(name: str) -> type[Policy]:
    """Return the policy class registered as ``name``, importing ``policies.<name>`` on first use.

    Raises ``KeyError`` naming the policy and listing the known ones when there is no such policy.
    """
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"policies.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"policies.{name}":
                raise
    if name not in _REGISTRY:
        raise KeyError(f"no policy named {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered_policies() -> tuple[str, ...]:
    """Names of every policy in the registry, after importing each ``policies/<name>/`` package once.

    A package that registers no policy (e.g. ``policies/datasets``) is imported and contributes nothing.
    """
    import policies

    for module in pkgutil.iter_modules(policies.__path__):
        if module.ispkg:
            importlib.import_module(f"policies.{module.name}")
    return tuple(sorted(_REGISTRY))


def make_policy(
    name: str,
    features: Mapping[str, Mapping[str, Any]],
    stats: Mapping[str, Mapping[str, Any]] | None = None,
    config: PolicyConfig | Mapping[str, Any] | None = None,
) -> Policy:
    """Build policy ``name`` from its config (an instance, a dict of overrides, or ``None`` for defaults).

    Raises ``KeyError`` for an unknown policy, ``TypeError`` for an unknown config field and
    ``ValueError`` for a bad config value (both name the field).
    """
    cls = policy_class(name)
    if config is None:
        config = cls.config_class()
    elif isinstance(config, Mapping):
        config = cls.config_class(**dict(config))
    return cls(config, features, stats)
