"""Train / validation / test scene lists.

Rules (see ``docs/pipeline.md``):

* ``test: official`` is the 20-scene final AutoICE test set
  (:data:`~icecontext.data.io.format.OFFICIAL_TEST_SCENES`); a list or a file names others.
* ``val`` is an explicit list, or ``val_count`` scenes drawn from the training
  candidates with ``numpy.random.default_rng(val_seed)`` (the draw depends only on the
  sorted candidate names and the seed).
* ``train`` defaults to every available scene that is in neither val nor test.
* A scene named in a list but missing from the store/folder is an error naming the
  scene, the list and the store/folder; so is a scene in two splits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icecontext.data.config import SplitsConfig
from icecontext.data.io.format import (
    OFFICIAL_TEST_SCENES,
    SCENE_NAME_RE,
    scene_name_from_file,
    scene_name_from_raw,
)
from icecontext.errors import ConfigError, DataError


@dataclass(frozen=True)
class Splits:
    """Resolved scene lists (each sorted)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def normalise_scene_name(text: str) -> str:
    """Accept a scene name, a ``_prep.nc`` file name or a raw file name; return the name.

    Raises:
        ValueError: If the text is none of these.
    """
    text = text.strip()
    if SCENE_NAME_RE.match(text):
        return text
    for parse in (scene_name_from_file, scene_name_from_raw):
        try:
            return parse(text)
        except ValueError:
            continue
    raise ValueError(f"'{text}' is not a scene name (YYYYMMDDThhmmss_dmi|cis) or scene file name")


def read_scene_list(path: str | os.PathLike[str], option: str = "data.splits") -> list[str]:
    """Read scene names from a text file: one per line, ``#`` comments, blanks ignored.

    Raises:
        ConfigError: If the file is missing or a line is not a scene name (naming the
            option, file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(option, f"scene list file '{path}' does not exist")
    names: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            names.append(normalise_scene_name(text))
        except ValueError as exc:
            raise ConfigError(option, f"{path}, line {number}: {exc}") from None
    return names


def _as_names(value: Sequence[str] | Path | None, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, Path):
        return read_scene_list(value, option)
    out = []
    for text in value:
        try:
            out.append(normalise_scene_name(text))
        except ValueError as exc:
            raise ConfigError(option, str(exc)) from None
    return out


def draw_validation(candidates: Sequence[str], count: int, seed: int) -> list[str]:
    """Draw ``count`` validation scenes from ``candidates`` (seeded, order-independent)."""
    pool = sorted(set(candidates))
    if count > len(pool):
        raise ConfigError(
            "data.splits.val_count",
            f"asks for {count} validation scenes but only {len(pool)} training scenes exist",
        )
    rng = np.random.default_rng(seed)
    return sorted(pool[i] for i in rng.choice(len(pool), size=count, replace=False))


def _check_available(names: Sequence[str], available: set[str], option: str, where: str) -> None:
    for name in names:
        if name not in available:
            raise DataError(f"scene '{name}' listed in {option} is not in {where}")


def resolve_splits(
    cfg: SplitsConfig,
    available: Sequence[str],
    where: str,
    test_available: Sequence[str] | None = None,
    test_where: str | None = None,
) -> Splits:
    """Resolve the configured splits against the scenes that exist.

    Args:
        cfg: The splits section.
        available: Scene names in the store or folder.
        where: The store or folder, named in errors.
        test_available: Scenes where the test split is looked up (default ``available``).
        test_where: Location named in test-split errors (default ``where``).

    Returns:
        The three lists.

    Raises:
        DataError: If a listed scene is missing (naming scene, list and store/folder).
        ConfigError: If a scene is in two splits or the validation draw is too large.
    """
    have = set(available)
    test_have = have if test_available is None else set(test_available)
    test_loc = where if test_where is None else test_where
    if cfg.test == "official":
        test = list(OFFICIAL_TEST_SCENES)
    else:
        test = _as_names(cfg.test, "data.splits.test") or []
    _check_available(test, test_have, "data.splits.test", test_loc)
    val = _as_names(cfg.val, "data.splits.val") or []
    _check_available(val, have, "data.splits.val", where)
    train = _as_names(cfg.train, "data.splits.train")
    if train is not None:
        _check_available(train, have, "data.splits.train", where)
    if not val and cfg.val_count:
        pool = train if train is not None else [n for n in have if n not in set(test)]
        val = draw_validation(pool, cfg.val_count, cfg.val_seed)
        if train is not None:
            train = [n for n in train if n not in set(val)]
    if train is None:
        train = [n for n in have if n not in set(val) | set(test)]
    for a_name, a, b_name, b in (
        ("train", train, "val", val),
        ("train", train, "test", test),
        ("val", val, "test", test),
    ):
        both = sorted(set(a) & set(b))
        if both:
            raise ConfigError(
                f"data.splits.{b_name}",
                f"scene '{both[0]}' is in both the {a_name} and the {b_name} split",
            )
    return Splits(tuple(sorted(set(train))), tuple(sorted(set(val))), tuple(sorted(set(test))))
