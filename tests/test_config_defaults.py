"""Every conf/ entry composes into its typed schema, and no YAML value disagrees with its dataclass default.

The rule (conf/README.md): the dataclass is the one source of every default. A *base* entry (a primary config such as
conf/train.yaml, a group's default option such as env=pusht, or an option with a schema of its own such as
robot=so100) may restate a default so the file reads as a menu, but every value it restates must equal the
dataclass's. A *variant* (another option of a group sharing the default option's schema: env=pusht_image,
env=pusht_disturbed, logger=disabled) sets only the keys that make it the variant: those may differ from the
defaults (and it must differ somewhere), and every key it does not set stays the schema's default. A primary config
that extends another (conf/train_vla.yaml: ``defaults: [train, override env: ..., ...]``) is a variant of that one: it
composes into the same schema, and every key it neither sets nor changes through a group override stays what the
base composes. Interpolations (``${...}``) and ``???`` are wiring, not defaults, and are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from scripts import _entry
from tests.conftest import CONF_DIR

# values for `???` keys (by their last name) so that every entry can be built into its dataclasses
MANDATORY = {"policy_path": "checkpoint", "run_dir": "run", "port": 5555, "host": "127.0.0.1", "area": "sim",
             "path": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"}  # path: policy=vla_hf's backbone.path
# eval_sim2real needs run_dir or checkpoints; identify a name (or out) for the file it writes
EXTRA_OVERRIDES = {"eval_sim2real": ["checkpoints=[checkpoint]"], "identify": ["name=check"]}
# groups no primary config composes yet, with why
STANDALONE_GROUPS: dict[str, str] = {}
# the option of a standalone group that restates its schema's defaults, of which the group's other options are variants
STANDALONE_BASES: dict[str, str] = {}
# groups a primary config leaves off by default (`- reward: null`): the option that restates its schema's defaults,
# of which the group's other options are variants
NULL_DEFAULT_BASES = {"reward": "topreward", "env": "pusht"}  # env: eval.py's physics override
# entries a schema refuses by design, with why: serve_robot cannot serve a remote robot; monitor=streaming needs a
# model dir (monitor.path) that no config can name
REFUSED = {("serve_robot", "robot", "remote"): "robot=remote", **{(name, "monitor", "streaming"): "monitor.path"
                                                                  for name in ("deploy", "collect", "eval")}}

_entry.register_configs()


@dataclass
class Entry:
    """One YAML file under conf/: a primary config (group None) or an option of a group."""

    path: Path
    group: str | None
    name: str
    schema: str | None  # the ConfigStore name of its schema, from its defaults list (None: typed by its parent)
    groups: dict[str, str] = field(default_factory=dict)  # a primary config's default option per group
    extends: str | None = None  # a primary config built on another primary config (its first default)


def _entries() -> list[Entry]:
    entries = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = None if path.parent == CONF_DIR else path.parent.relative_to(CONF_DIR).as_posix()
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
        schema = next((d for d in defaults if isinstance(d, str) and d != "_self_"), None)
        if schema is not None and group is not None:
            schema = f"{group}/{schema}"
        groups = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if not k.startswith("override")}
        entries.append(Entry(path, group, path.stem, schema, groups))
    by_name = {e.name: e for e in entries if e.group is None}
    for entry in entries:
        base = by_name.get(entry.schema) if entry.group is None else None
        if base is not None:  # extends another primary config: its schema and groups, with the overrides applied
            overrides = {k.split()[-1]: v for d in yaml.safe_load(entry.path.read_text())["defaults"]
                         if isinstance(d, dict) for k, v in d.items() if k.startswith("override")}
            entry.extends, entry.schema, entry.groups = base.name, base.schema, {**base.groups, **overrides}
    return entries


ENTRIES = _entries()
PRIMARY = [e for e in ENTRIES if e.group is None]
OPTIONS = {(e.group, e.name): e for e in ENTRIES if e.group is not None}


def _compositions() -> Iterator[tuple[str, list[str], tuple[str, str] | None]]:
    """Every primary config as it is, and with every option of each of its groups."""
    for primary in PRIMARY:
        yield primary.name, [], None
        for group in primary.groups:
            for (option_group, option), _ in OPTIONS.items():
                if option_group == group:
                    yield primary.name, [f"{group}={option}"], (group, option)


COMPOSITIONS = list(_compositions())


def compose_entry(config_name: str, overrides: list[str], config_dir: Path = CONF_DIR) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides`` composed through Hydra's compose API (as a script would see it,
    Hydra's own node removed, ``hydra:`` interpolations resolvable)."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = "outputs/test_config_defaults"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _fill_mandatory(cfg: DictConfig) -> None:
    for key in OmegaConf.missing_keys(cfg):
        OmegaConf.update(cfg, key, MANDATORY[key.rsplit(".", 1)[-1]])


def schema_defaults(schema: str) -> DictConfig:
    """The dataclass defaults of a registered schema (``train_schema``, ``env/pusht_schema``, ...)."""
    return ConfigStore.instance().load(f"{schema}.yaml").node


def file_values(path: Path) -> dict[str, Any]:
    """What a YAML file sets, without its ``defaults`` list and its ``hydra`` settings."""
    values = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in values.items() if k not in ("defaults", "hydra")}


def _leaves(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _is_wiring(value: Any) -> bool:
    return isinstance(value, str) and ("${" in value or value == "???")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _default_at(defaults: DictConfig, key: str) -> tuple[bool, Any]:
    """(True, the schema's default) at dotted ``key``; (False, None) where the schema has no default there (an
    ``Any`` group node, or ``???``)."""
    node: Any = defaults
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node or OmegaConf.is_missing(node, part):
            return False, None
        node = node._get_node(part)._value() if OmegaConf.is_interpolation(node, part) else node[part]
    return True, _plain(node)


def disagreements(values: Mapping[str, Any], defaults: DictConfig, source: str) -> list[str]:
    """One message per value of ``values`` (a YAML file's settings) that differs from the schema default
    ``defaults`` at the same key, naming the file, the key and both values; wiring is skipped."""
    found = []
    for key, value in _leaves(values):
        has_default, default = _default_at(defaults, key)
        if _is_wiring(value) or not has_default:
            continue
        if _plain(value) != default:
            found.append(f"{source}: {key} is {value!r} in the YAML but {default!r} in its dataclass")
    return found


def _option_defaults(entry: Entry) -> DictConfig:
    """The schema defaults an option is compared with: its own schema, or its node in a primary's schema."""
    if entry.schema is not None:
        return schema_defaults(entry.schema)
    primary = next(p for p in PRIMARY if entry.group in p.groups)
    return schema_defaults(primary.schema)[entry.group]


def _is_variant(entry: Entry) -> bool:
    if entry.group in STANDALONE_BASES:
        base = STANDALONE_BASES[entry.group]
        return entry.name != base and OPTIONS[(entry.group, base)].schema == entry.schema
    default_options = {p.groups[entry.group] or NULL_DEFAULT_BASES[entry.group] for p in PRIMARY
                       if entry.group in p.groups and p.extends is None}
    if entry.name in default_options:
        return False
    return any(OPTIONS[(entry.group, d)].schema == entry.schema for d in default_options)


# ------------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize(("config_name", "overrides", "option"), COMPOSITIONS,
                         ids=[" ".join([c, *o]) for c, o, _ in COMPOSITIONS])
def test_every_entry_composes_into_its_typed_schema(config_name, overrides, option):
    cfg = compose_entry(config_name, overrides + EXTRA_OVERRIDES.get(config_name, []))
    _fill_mandatory(cfg)
    refused = REFUSED.get((config_name, *option) if option else None)
    if refused:
        with pytest.raises(ValueError, match=refused):
            OmegaConf.to_object(cfg)
        return
    run = OmegaConf.to_object(cfg)  # __post_init__ checks run: the composed values are valid, not only well typed
    assert type(run) is OmegaConf.get_type(schema_defaults(PRIMARY_BY_NAME[config_name].schema))


PRIMARY_BY_NAME = {p.name: p for p in PRIMARY}


def test_every_conf_file_is_composed_by_some_primary_config():
    composed = {option for _, _, option in COMPOSITIONS if option is not None}
    composed |= {option for option in OPTIONS if option[0] in STANDALONE_GROUPS}
    assert set(OPTIONS) == composed, f"options no primary config composes: {sorted(set(OPTIONS) - composed)}"
    assert all(p.schema is not None for p in PRIMARY), "every primary config names its schema first in defaults"


@pytest.mark.parametrize("entry", [e for e in ENTRIES if (e.group is None and e.extends is None)
                                   or (e.group is not None and not _is_variant(e))],
                         ids=lambda e: e.path.relative_to(CONF_DIR).as_posix())
def test_a_base_entry_restates_only_its_dataclass_defaults(entry):
    defaults = schema_defaults(entry.schema) if entry.group is None else _option_defaults(entry)
    assert disagreements(file_values(entry.path), defaults, entry.path.name) == []


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.group is not None and _is_variant(e)],
                         ids=lambda e: e.path.relative_to(CONF_DIR).as_posix())
def test_a_variant_differs_from_the_defaults_and_only_where_it_says(entry):
    defaults = _option_defaults(entry)
    if entry.group in STANDALONE_GROUPS:  # no primary config composes it: the option is composed on its own
        composed = compose_entry(f"{entry.group}/{entry.name}", [])[entry.group]  # its package is the group
    else:
        primary = next(p for p in PRIMARY if entry.group in p.groups)
        composed = compose_entry(primary.name, [f"{entry.group}={entry.name}"])[entry.group]
    own = dict(_leaves(file_values(entry.path)))
    assert disagreements(own, defaults, entry.path.name), f"{entry.path.name} sets nothing a default does not"
    for key, value in _leaves(OmegaConf.to_container(composed)):
        if key not in own and not any(key.startswith(f"{k}.") for k in own):
            has_default, default = _default_at(defaults, key)
            assert not has_default or value == default, f"{entry.path.name} changes {key}, which it does not set"


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.extends is not None], ids=lambda e: e.name)
def test_a_primary_config_that_extends_another_changes_only_what_it_says(entry):
    overrides = [f"{group}={option}" for group, option in entry.groups.items()
                 if PRIMARY_BY_NAME[entry.extends].groups.get(group) != option]
    base = dict(_leaves(OmegaConf.to_container(compose_entry(entry.extends, overrides))))
    own = dict(_leaves(OmegaConf.to_container(compose_entry(entry.name, []))))
    sets = dict(_leaves(file_values(entry.path)))
    changed = {k for k in own if own[k] != base.get(k)}
    assert changed, f"{entry.path.name} composes exactly what {entry.extends}.yaml does"
    unexplained = [k for k in changed if k not in sets and not any(k.startswith(f"{s}.") for s in sets)
                   and "${" not in str(sets.get(k, ""))]
    assert unexplained == [], f"{entry.path.name} changes {unexplained}, which it does not set"


@dataclass
class _Timeline:
    n_action_steps: int = 4
    horizon: int = 16


@dataclass
class _Run:
    policy: _Timeline = field(default_factory=_Timeline)
    rate_hz: float = 45.0
    output_dir: str = "out"


@dataclass
class _DemoConfig:
    ema_decay: float = 0.999
    n_episodes: int = 200


def test_the_checker_names_a_key_whose_yaml_value_disagrees_with_its_dataclass():
    defaults = OmegaConf.structured(_Run)
    agreeing = {"policy": {"n_action_steps": 4, "horizon": 16}, "rate_hz": 45, "output_dir": "${hydra:runtime.x}"}
    assert disagreements(agreeing, defaults, "run.yaml") == []
    found = disagreements({"policy": {"n_action_steps": 8, "horizon": 16}, "rate_hz": 45}, defaults, "run.yaml")
    assert len(found) == 1 and "policy.n_action_steps" in found[0] and "8" in found[0] and "4" in found[0]


def test_a_conf_dir_whose_yaml_disagrees_with_its_schema_fails_naming_the_key(tmp_path):
    ConfigStore.instance().store(name="demo_schema", node=_DemoConfig)
    (tmp_path / "demo.yaml").write_text("defaults:\n  - demo_schema\n  - _self_\n\nema_decay: 0.995\nn_episodes: 200\n")
    compose_entry("demo", [], config_dir=tmp_path)  # composes: a disagreement is not a type error
    found = disagreements(file_values(tmp_path / "demo.yaml"), schema_defaults("demo_schema"), "demo.yaml")
    assert found == ["demo.yaml: ema_decay is 0.995 in the YAML but 0.999 in its dataclass"]
