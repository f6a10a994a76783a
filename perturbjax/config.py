"""Loading experiment configs and applying command-line overrides.

An experiment config is a Python file defining ``get_config(arg=None)`` that
returns an ``ml_collections.ConfigDict``, and optionally ``get_sweep()`` that
returns one list of strings per run (the caller decides how to apply them).
``arg`` selects a variant (e.g. ``"fold=2,test"``) and is usually decoded with
``parse_arg``. Overrides are parsed against the type
of the value they replace, so a typo in a key or value fails before any work is
done instead of silently training the wrong model.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import ml_collections

_TRUE = ("true", "1")
_FALSE = ("false", "0")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses a big_vision-style variant string such as ``"fold=2,test"``.

    Args:
        arg: comma-separated items; a bare word sets that (bool) key to True,
            ``key=value`` parses ``value`` by the type of the key's default.
            None or "" leaves all defaults.
        **defaults: the valid keys and their default values.

    Returns:
        A ConfigDict with the defaults updated from ``arg``.

    Raises:
        ValueError: for a key not in ``defaults``, a bare word whose default is
            not a bool, or a value that does not parse as the default's type.
    """
    result = ml_collections.ConfigDict(defaults)
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, has_value, text = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"Unknown config arg {key!r} in {arg!r}; valid args: {sorted(defaults)}"
            )
        default = defaults[key]
        if has_value:
            result[key] = _parse_value(text.strip(), type(default), key)
        elif isinstance(default, bool):
            result[key] = True
        else:
            raise ValueError(
                f"Config arg {key!r} is a bare word but its default {default!r} is not a "
                f"bool; use {key}=VALUE"
            )
    return result


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path/to/file.py`` or ``path/to/file.py:ARG`` by calling ``get_config(ARG)``.

    The file is imported by path, so it need not be on ``sys.path``. ``ARG`` is
    everything after the first ``.py:``; an empty ``ARG`` means None.

    Raises:
        FileNotFoundError: if the file does not exist.
        ImportError: if the file defines no ``get_config``.
        TypeError: if ``get_config`` does not return a ConfigDict.
    """
    path, arg = _split_spec(spec)
    config = _get_function(path, "get_config")(arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            f"get_config in {path} must return an ml_collections.ConfigDict, "
            f"got {type(config).__name__}"
        )
    return config


def load_sweep(spec: str, *, strict: bool = True) -> list[list[str]]:
    """Returns ``get_sweep()`` from a config file: one list of strings per run.

    A ``get_sweep(arg)`` that takes a parameter receives the spec's ``:ARG`` (None without
    one), so a variant such as ``:test`` can shrink the sweep as it shrinks each run. For one
    that takes none, an ``:ARG`` is an error, or ignored with ``strict=False`` (the launcher's
    case: the variant still reaches every run's config).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if ``spec`` carries an ``:ARG`` that ``get_sweep`` takes no parameter
            for (silently dropping it would run a different sweep than asked for).
        ImportError: if the file defines no ``get_sweep``.
        TypeError: if ``get_sweep`` does not return a list of lists of strings.
    """
    path, arg = _split_spec(spec)
    fn = _get_function(path, "get_sweep")
    takes_arg = bool(inspect.signature(fn).parameters)
    if arg is not None and not takes_arg and strict:
        raise ValueError(f"get_sweep() in {path} takes no variant, got {spec!r} (':ARG')")
    sweep = fn(arg) if takes_arg else fn()
    if not isinstance(sweep, (list, tuple)) or not all(
        isinstance(run, (list, tuple)) and all(isinstance(s, str) for s in run)
        for run in sweep
    ):
        raise TypeError(f"get_sweep in {path} must return a list of lists of str, got {sweep!r}")
    return [list(run) for run in sweep]


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Returns a copy of ``config`` with ``dotted.key=value`` overrides applied.

    Values are parsed against the type of the value they replace: int, float
    (int literals accepted), bool (true/false/1/0, any case), str (verbatim),
    list/tuple (a Python literal such as ``"['mean','ridge']"``, or for strings
    the comma form ``mean,ridge``, bracketed or not: ``[mean,ridge]``), and None-valued fields take any Python
    literal, falling back to the raw string. Typed placeholders
    (``config_dict.placeholder(int)``) parse by their declared type. Field
    references are kept, so overriding a referenced field updates its users.

    Raises:
        ValueError: for a malformed override, an unknown key (with close
            matches suggested), a key that would descend into a non-config
            value, or a value that does not parse as the field's type.
    """
    config = copy.deepcopy(config)
    for override in overrides:
        dotted, has_value, text = override.partition("=")
        if not has_value or not dotted:
            raise ValueError(f"Override {override!r} must have the form dotted.key=value")
        *parents, leaf = dotted.split(".")
        node = config
        for depth, part in enumerate(parents):
            _check_key(node, part, parents[:depth])
            child = node[part]
            if not isinstance(child, ml_collections.ConfigDict):
                raise ValueError(
                    f"Cannot set {dotted!r}: {'.'.join(parents[: depth + 1])!r} holds a "
                    f"{type(child).__name__} value, not a nested config"
                )
            node = child
        _check_key(node, leaf, parents)
        field_type = node.get_type(leaf)
        if issubclass(field_type, ml_collections.ConfigDict):
            raise ValueError(
                f"Cannot set {dotted!r}: it is a nested config; override its fields instead"
            )
        if node[leaf] is None and field_type is not type(None) and text == "None":
            node[leaf] = None  # A typed placeholder may be reset to None.
        else:
            node[leaf] = _parse_value(text, field_type, dotted)
    return config


def describe_experiment(spec: str, config: ml_collections.ConfigDict) -> str:
    """What `perturbjax train --show-config` prints: the experiment file's docstring (its
    variants), the number of runs its `get_sweep()` defines, and every key of the resolved
    config with its value."""
    path, _ = _split_spec(spec)
    module = _import_file(path)
    parts = [f"# {path}", (module.__doc__ or "(no docstring)").strip()]
    if callable(getattr(module, "get_sweep", None)):
        parts.append(f"get_sweep(): {len(load_sweep(spec, strict=False))} runs "
                     f"(perturbjax launch --config {spec} --sweep --dry-run lists them)")
    parts.append(f"# resolved config of {spec} (override any key with --config.KEY=VALUE)")
    parts.append(config_to_json(config))
    return "\n\n".join(parts)


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """Serialises a config for a run directory: sorted keys, indent 2, tuples as lists."""
    return json.dumps(config.to_dict(), sort_keys=True, indent=2)


def _split_spec(spec: str) -> tuple[str, str | None]:
    # Split at ".py:" rather than the first ":" so the ARG itself may contain colons.
    path, sep, arg = spec.partition(".py:")
    if sep:
        path += ".py"
    return path, arg or None


def _get_function(path: str, name: str):
    module = _import_file(path)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ImportError(f"Config file {path} does not define a function {name}()")
    return fn


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    # A per-path module name keeps two configs that share a file name apart.
    abspath = os.path.abspath(path)
    digest = hashlib.sha1(abspath.encode()).hexdigest()[:12]
    module_name = f"_perturbjax_config_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, abspath)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot import config file {path} (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    # Registered like a normal import so dataclasses and pickling inside the
    # config can find their module.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _check_key(node: ml_collections.ConfigDict, key: str, parents: Sequence[str]) -> None:
    if key in node:
        return
    prefix = "".join(f"{p}." for p in parents)
    keys = sorted(node.keys())
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""
    where = f"in {prefix[:-1]!r}" if parents else "at the top level"
    raise ValueError(f"Unknown config key {prefix + key!r}; {hint}valid keys {where}: {keys}")


def _parse_value(text: str, field_type: type, key: str) -> Any:
    """Parses command-line ``text`` for a field of ``field_type``.

    Raises:
        ValueError: naming ``key``, the expected type and ``text`` on failure.
    """
    if field_type is type(None):
        return _literal_or_str(text)
    if issubclass(field_type, bool):  # Before int: bool is an int subclass.
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
    elif issubclass(field_type, (int, float)):
        try:
            return field_type(text)
        except ValueError:
            pass
    elif issubclass(field_type, str):
        return text
    elif issubclass(field_type, (list, tuple)):
        return field_type(_parse_sequence(text))
    else:
        value = _literal_or_str(text)
        if isinstance(value, field_type):
            return value
    raise ValueError(
        f"Cannot parse {text!r} for config key {key!r}: expected {field_type.__name__}"
    )


def _parse_sequence(text: str) -> list:
    if not text.strip():
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        # Comma form for lists of strings: a,b -> ['a', 'b'], also bracketed without quotes
        # ([a,b], which a shell leaves unquoted), so it never becomes the string '[a'.
        inner = text.strip()
        if inner[:1] + inner[-1:] in ("[]", "()"):
            inner = inner[1:-1]
        return [item.strip() for item in inner.split(",") if item.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _literal_or_str(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
