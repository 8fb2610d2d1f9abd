"""YAML configuration with dotted command-line overrides, validated by pydantic.

Each subsystem defines its own section as a pydantic model (``extra="forbid"`` so an
unknown key is an error); a command composes the sections it needs. This module holds
only the generic mechanism:

* :func:`load_yaml` reads a file (relative paths inside it are resolved against the
  file's folder by the sections that hold paths, not here);
* :func:`apply_overrides` applies ``a.b.c=value`` overrides, with values parsed as YAML
  (``model.rates=[6,12,18]``, ``train.max_epochs=3``, ``data.root=/data``);
* :func:`validate` turns pydantic's errors into :class:`~icecontext.errors.ConfigError`
  naming the dotted key.
"""

from __future__ import annotations

import copy
import difflib
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from icecontext.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """Base class of configuration sections: unknown keys are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping.

    Raises:
        ConfigError: If the file is missing, unreadable or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"'{path}' is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"'{path}' must hold a mapping at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into the key path and the YAML-parsed value.

    Raises:
        ConfigError: If the text has no ``=`` or an empty key.
    """
    if "=" not in text:
        raise ConfigError(text, "overrides take the form key.subkey=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(text, "override key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` override applied.

    Intermediate mappings are created as needed; whether the key exists is checked
    later by validation, which names the key.
    """
    out = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _dotted(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (through ``X | None`` and the like), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _suggestion(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """``"; did you mean 'x'? (valid here: ...)"`` for an unknown key at ``loc``."""
    cls: type[BaseModel] | None = model
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part)) if cls is not None else None
        cls = _model_in(field.annotation) if field is not None else None
    if cls is None:
        return " (check the spelling; see the documented configs)"
    valid = list(cls.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} (valid here: {', '.join(valid)})"


def validate(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """Validate a mapping into ``model``.

    Raises:
        ConfigError: Naming the dotted key of the first problem, e.g.
            ``option 'model.aspp.rates.0': Input should be greater than 0``.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key also makes its intended key "missing": name the misspelling
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc, msg = err["loc"], err["msg"]
        if _is_union_branch(loc):
            # `"auto" | bool` fails once per branch: name the option, list what it takes
            branches = [e for e in errors if e["loc"][:-1] == loc[:-1]]
            loc = loc[:-1]
            msg = " or ".join(
                e["msg"] if i == 0 else e["msg"].removeprefix("Input should be ")
                for i, e in enumerate(branches)
            )
        key = _dotted([*([prefix] if prefix else []), *loc])
        if err["type"] == "extra_forbidden":
            msg = "unknown option" + _suggestion(model, err["loc"])
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {err['input']!r})"
        raise ConfigError(key or model.__name__, msg) from None


def _is_union_branch(loc: Sequence[int | str]) -> bool:
    """Whether a pydantic error location ends in the tag of a union's branch.

    Pydantic names the branch a value was tried against, e.g. ``literal['auto']``,
    ``bool`` or ``list[int]``; option names are plain identifiers, and a dict's bad key
    is ``[key]``.
    """
    last = loc[-1] if loc else None
    if not isinstance(last, str) or last.startswith("["):
        return False
    return "[" in last or last in _TYPE_TAGS


_TYPE_TAGS = frozenset({"bool", "int", "float", "str", "none", "dict", "list"})


def load_config(
    model: type[M], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> M:
    """Load ``path`` (optional), apply overrides and validate into ``model``."""
    data = load_yaml(path) if path is not None else {}
    return validate(model, apply_overrides(data, overrides))


def dump_config(cfg: BaseModel) -> str:
    """Return the resolved configuration as YAML text (the form saved with every run)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
