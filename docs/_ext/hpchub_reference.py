"""The reference pages, generated from the code at build time so they cannot drift from it.

- the site config: the pydantic models under ``SiteConfig`` (each model's docstring; each key's
  YAML path, type, default and ``description``);
- the settings of the spawner and the ipyparallel launchers: their own configurable traitlets
  (help text and default);
- the ``hpchub`` command: its argparse help, command by command.

Written into ``docs/reference/_generated/`` (gitignored) when the builder starts. A key or a
setting without help text, or a model without a docstring, is a Sphinx warning, and the docs build
turns warnings into errors: the reference cannot silently lose its words.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

# What the reference documents, as "module:attribute". The one place to change when modules move.
SITE_CONFIG_MODEL = "hpchub.core.config:SiteConfig"
TRAITLETS_CLASSES = {
    "spawner": ["hpchub.hub.spawner:HPCSpawner", "hpchub.hub.teaching:ClassView"],
    "parallel": ["hpchub.parallel:HPCEngineSetLauncher", "hpchub.parallel:HPCControllerLauncher"],
}
CLI_PARSER = "hpchub.admin.cli:parser"

OUT_DIR = Path(__file__).resolve().parent.parent / "reference" / "_generated"
log = logging.getLogger(__name__)


def _load(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    ticks = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


# ------------------------------------------------------------------------------------ site config

def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return annotation, False


def _annotated_parts(annotation: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        inner, more = _annotated_parts(base)
        return inner, more + metadata
    return annotation, []


def _type_text(annotation: Any) -> str:
    """A reader's name for a key's type: "text", "memory (4G)", "list of text", "mapping name -> queue"."""
    annotation, optional = _strip_optional(annotation)
    base, metadata = _annotated_parts(annotation)
    pattern = next((getattr(m, "pattern", None) for item in metadata
                    for m in [item, *getattr(item, "metadata", [])] if getattr(m, "pattern", None)), None)
    validators = [getattr(getattr(item, "func", None), "__qualname__", "") for item in metadata]
    origin = typing.get_origin(base)
    if any(name.startswith("Memory.") for name in validators):
        text = "memory (512M, 4G, 1T)"
    elif any(name.startswith("Walltime.") for name in validators):
        text = "walltime (HH:MM:SS or D-HH:MM:SS)"
    elif any(name == "_allocation_setting" for name in validators):
        text = "a name, a list of names, or {from_scheduler: true}"
    elif origin is typing.Literal:
        text = " or ".join(repr(value).replace("'", '"') for value in typing.get_args(base))
    elif origin is list:
        text = "list of " + _type_text(typing.get_args(base)[0])
    elif origin is dict:
        key, value = typing.get_args(base)
        text = f"mapping of {_type_text(key)} -> {_type_text(value)}"
    elif _is_model(base):
        text = f"[{base.__name__}](#{_anchor(base)})"
    elif base is bool:
        text = "true or false"
    elif base is int:
        bounds = [f"{sign} {value}" for item in metadata for m in [item, *getattr(item, "metadata", [])]
                  for sign, attribute in ((">=", "ge"), ("<=", "le")) if (value := getattr(m, attribute, None)) is not None]
        text = "integer" + (f" ({', '.join(bounds)})" if bounds else "")
    elif base is str and pattern is not None and pattern == _names_pattern():
        text = "name (letters, digits, `_.+-`)"
    elif base is str:
        text = "text" + (f" matching {_code(pattern)}" if pattern else "")
    else:
        text = getattr(base, "__name__", str(base))
    return text + (" or null" if optional else "")


def _field_type(field: Any) -> Any:
    """The key's annotation with what pydantic moved out of it (patterns, validators) put back."""
    if field.metadata:
        return typing.Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _names_pattern() -> str | None:
    """The schema's pattern for names (queues, accounts, clusters), written as words instead."""
    return getattr(importlib.import_module(SITE_CONFIG_MODEL.partition(":")[0]), "NAME_PATTERN", None)


def _anchor(model: type) -> str:
    return "model-" + model.__name__.lower()


def _children(annotation: Any, path: str) -> list[tuple[type, str]]:
    """The models inside a key's type, with the YAML path their keys continue from."""
    annotation, _ = _strip_optional(annotation)
    base, _ = _annotated_parts(annotation)
    origin = typing.get_origin(base)
    if _is_model(base):
        return [(base, path)]
    if origin is list:
        return _children(typing.get_args(base)[0], path + "[]")
    if origin is dict:
        return _children(typing.get_args(base)[1], path + ".<name>")
    return []


def _default_text(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "required"
    default = field.default
    if default is PydanticUndefined and field.default_factory is not None:
        default = field.default_factory()
    if _is_model(type(default)):
        return "its keys' defaults"
    if default is None:
        return "null"
    if isinstance(default, bool):
        return _code(str(default).lower())
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, str):
        return _code(f'"{default}"')
    return _code(repr(default))


def site_config_page() -> str:
    root = _load(SITE_CONFIG_MODEL)
    models: dict[type, list[str]] = {}
    queue: list[tuple[type, str]] = [(root, "")]
    while queue:
        model, path = queue.pop(0)
        models.setdefault(model, []).append(path)
        if len(models[model]) > 1:
            continue
        for name, field in model.model_fields.items():
            queue.extend(_children(field.annotation, f"{path}.{name}" if path else name))
    # A model reached again at a new path lists that path too (its keys are documented once).
    lines = [
        "# Site config keys",
        "",
        f"*Generated from the site config's schema (`{SITE_CONFIG_MODEL}` and the models under it) at every "
        "docs build.* Unknown keys are errors; a key's path below is its place in the YAML file (`<name>`: a key "
        "you choose, `[]`: an item of a list). See [the site config](../../site-config.md) for a whole example and "
        "the rules checked across keys.",
        "",
    ]
    for model, paths in models.items():
        doc = inspect.getdoc(model) or ""
        if not doc or doc == inspect.getdoc(model.__mro__[1]):
            log.warning("site config model %s has no docstring (the reference needs one)", model.__name__)
            doc = ""
        where = ", ".join(_code(path) for path in dict.fromkeys(paths) if path)
        lines += [f"({_anchor(model)})=", f"## {model.__name__}", "", f"At {where}." if where else "The top level.", "",
                  doc, "",
                  "| key | type | default | what it is |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if not field.description:
                log.warning("site config key %s.%s has no description (Field(description=...))", model.__name__, name)
            lines.append(f"| {_code(name)} | {_cell(_type_text(_field_type(field)))} | {_cell(_default_text(field))} "
                         f"| {_cell(field.description or '')} |")
        lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- traitlets

def _trait_default(cls: type, name: str, trait: Any) -> str:
    generator = getattr(cls, "_trait_default_generators", {}).get(name)
    if generator is not None and type(generator).__name__ == "DefaultHandler":
        return "computed when it starts (see the text)"
    return _code(trait.default_value_repr())


def _trait_type(trait: Any) -> str:
    names = [type(trait).__name__]
    if type(trait).__name__ == "Union":
        names = [type(t).__name__ for t in trait.trait_types]
    return " or ".join(names)


def traitlets_page(title: str, intro: str, specs: list[str]) -> str:
    lines = [f"# {title}", "", intro, ""]
    for spec in specs:
        cls = _load(spec)
        # hpchub's own settings, also those of its hpchub base classes (the launcher's job-side half),
        # in the order the classes define them; none of ipyparallel's or JupyterHub's.
        ours = [klass for klass in reversed(cls.__mro__) if klass is cls or klass.__module__.startswith("hpchub")]
        own = {name: trait for klass in ours for name, trait in klass.class_own_traits(config=True).items()}
        order = list(dict.fromkeys(name for klass in ours for name in vars(klass) if name in own))
        lines += [f"## {cls.__name__}", "", f"`{cls.__module__}.{cls.__name__}`: {inspect.getdoc(cls) or ''}", ""]
        for name in order:
            trait = own[name]
            help_text = inspect.cleandoc(trait.help or "")
            if not help_text:
                log.warning("setting %s.%s has no help text", cls.__name__, name)
            lines += [f"### `c.{cls.__name__}.{name}`", "",
                      f"{_trait_type(trait)}, default {_trait_default(cls, name, trait)}", "",
                      help_text, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- cli

def cli_page() -> str:
    top: argparse.ArgumentParser = _load(CLI_PARSER)()
    lines = ["# The `hpchub` command's options", "",
             f"*Generated from the command's own argument parser (`{CLI_PARSER}`) at every docs build.* "
             "See [the `hpchub` command](../../cli.md) for what each command does.", "",
             "```text", top.format_help().rstrip(), "```", ""]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                lines += [f"## hpchub {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ sphinx

PAGES: dict[str, Callable[[], str]] = {
    "site-config-keys.md": site_config_page,
    "spawner-settings.md": lambda: traitlets_page(
        "Spawner settings",
        "*Generated from the spawner's configurable traitlets at every docs build.* Set them in "
        "`jupyterhub_config.py` as `c.HPCSpawner.NAME = VALUE` (the class page's as `c.ClassView.NAME = VALUE`); see "
        "[the spawner](../../spawner.md) and [teaching](../../teaching.md). JupyterHub's own "
        "`Spawner` settings apply too (`poll_interval`, `start_timeout`, `http_timeout`, ...).",
        TRAITLETS_CLASSES["spawner"]),
    "parallel-settings.md": lambda: traitlets_page(
        "ipyparallel launcher settings",
        "*Generated from the launchers' configurable traitlets at every docs build.* Set them in "
        "`ipcluster_config.py` (`c.HPCEngineSetLauncher.NAME = VALUE`) or pass them to `Cluster(...)`; see "
        "[parallel engines](../../parallel.md).",
        TRAITLETS_CLASSES["parallel"]),
    "cli-options.md": cli_page,
}


def generate(app: Sphinx) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, make in PAGES.items():
        text = re.sub(r"\n{3,}", "\n\n", make()).rstrip() + "\n"
        target = OUT_DIR / name
        # Unchanged pages keep their mtime, so Sphinx does not reread them.
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
