"""The one command-line dialect of every mlpl command (`mlpl-*`, `scripts/*.py`).

A command's options are dataclass fields, and every option can be given in three ways, later ones winning:

    --config FILE        a YAML mapping of the fields (for train / recipe / ablations: the experiment or
                         recipe YAML, whose nested sections are its fields)
    --field-name VALUE   a flag derived from each field of the command's flat dataclasses (lists take several
                         values; booleans are `--name` / `--no-name`)
    key=value            dotted overrides after the flags, values parsed as YAML (`optim.lr=0.01`)

All values, whatever their way in, are checked and converted by `mlpl.config.build_dataclass` (an
unknown key is an error naming the valid ones), so the command line has exactly one typed coercion.

Why our own small parser and not transformers' `HfArgumentParser` (or a config library): the configs are
nested (`ExperimentConfig` of sections, a recipe holding `SourceConfig`s and free `dict` sections) and
carry fields such as `Sequence[str] | None`, `dict[str, str | None]`, `tuple[float, float]` and
`HubToken | str | None` that `HfArgumentParser` cannot turn into flags; it has no dotted `key=value`
overrides, and its own string-to-type conversion would have stood beside `build_dataclass`'s, which the
YAML files need anyway. Deriving argparse flags from `dataclasses.fields` takes the 150 lines below.

A field's flag spelling, help, `nargs`, `metavar` and `choices` come from its `metadata` (see `option`),
or from the `Flags` entry that names the dataclass (for dataclasses defined elsewhere, e.g. `HubConfig`).
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import apply_override, build_dataclass, read_yaml_mapping

FLAG_KEYS = ("help", "flag", "off_help", "nargs", "metavar", "choices")


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **flag) -> Any:
    """A dataclass field with its flag's `help`, `flag` (spelling, or for a bool a pair (on, off); default
    `--field-name`, and `--no-field-name` for off), `off_help` (a bool's off flag), `nargs`, `metavar` and
    `choices` in its metadata. No default: the option is required."""
    unknown = sorted(set(flag) - set(FLAG_KEYS))
    if unknown:
        raise TypeError(f"option(): unknown flag setting(s) {unknown}; use {FLAG_KEYS}")
    return dataclasses.field(default=default, default_factory=default_factory, metadata=flag)


@dataclasses.dataclass(frozen=True)
class Flags:
    """The flags of one flat dataclass: `settings` per field (as `option`'s keywords) over the fields'
    metadata, `skip` fields without a flag, `title` the help section."""

    cls: type
    title: str | None = None
    settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    skip: tuple[str, ...] = ()

    def fields(self) -> list[dataclasses.Field]:
        return [item for item in dataclasses.fields(self.cls) if item.name not in self.skip]

    def setting(self, item: dataclasses.Field) -> dict[str, Any]:
        return {**item.metadata, **self.settings.get(item.name, {})}


def _base_type(annotation: Any) -> Any:
    """The annotation without `| None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(_base_type(annotation)) in (list, tuple, collections.abc.Sequence)


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return dataclasses.MISSING


class CommandLine:
    """argparse with the dialect of the module doc.

    Args:
        description: the `--help` text (the command module's docstring).
        flags: the command's flat dataclasses (each a class or a `Flags`); their field names must differ.
        config: for train / recipe / ablations, `(path, overrides) -> config`, e.g. `mlpl.config.load_config`:
            `--config FILE` and `key=value` then address that nested config and the flags only the flat
            dataclasses. None: `--config FILE` is a YAML mapping of the flat dataclasses' fields.
        config_required: `--config` must be given.
    """

    def __init__(self, description: str | None, *flags: type | Flags, config: Callable | None = None, config_required: bool = False):
        self.flags = [entry if isinstance(entry, Flags) else Flags(entry) for entry in flags]
        self.config_loader = config
        self.config_required = config_required
        self.parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        what = "the experiment / recipe YAML" if config is not None else "a YAML mapping of these options"
        self.parser.add_argument("--config", metavar="FILE", required=config_required, help=what)
        self.owner: dict[str, Flags] = {}
        for entry in self.flags:
            group = self.parser.add_argument_group(entry.title) if entry.title else self.parser
            for item in entry.fields():
                if item.name in self.owner:
                    raise TypeError(f"option {item.name!r} is in both {self.owner[item.name].cls.__name__} and {entry.cls.__name__}")
                self.owner[item.name] = entry
                self._add_flag(group, entry, item)
        self.parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, values parsed as YAML")

    def _add_flag(self, group, entry: Flags, item: dataclasses.Field) -> None:
        setting = entry.setting(item)
        hints = typing.get_type_hints(entry.cls)
        annotation, default = hints[item.name], _default(item)
        spelling = setting.get("flag") or "--" + item.name.replace("_", "-")
        shown = "" if default is dataclasses.MISSING or default is None or default is False else f" (default: {default})"
        help_text = (setting.get("help") or "") + shown
        common = {"dest": item.name, "default": argparse.SUPPRESS, "help": help_text or None}
        if _base_type(annotation) is bool:
            on, off = spelling if isinstance(spelling, tuple) else (spelling, "--no-" + spelling[2:])
            group.add_argument(on, action="store_true", **common)
            group.add_argument(off, action="store_false", dest=item.name, default=argparse.SUPPRESS, help=setting.get("off_help", argparse.SUPPRESS))
            return
        extra = {key: setting[key] for key in ("metavar", "choices") if key in setting}
        nargs = setting.get("nargs", "+" if _is_list(annotation) else None)
        group.add_argument(spelling, nargs=nargs, **extra, **common)

    def parse(self, argv: Sequence[str] | None = None) -> "ParsedCommand":
        """The command's dataclasses from `argv` (default: sys.argv); a bad value exits with the usage (code 2)."""
        arguments = vars(self.parser.parse_intermixed_args(argv))
        path, overrides = arguments.pop("config", None), arguments.pop("overrides", [])
        try:
            config = None
            if self.config_loader is not None:
                config = self.config_loader(path, overrides)
                values, overrides = {}, []
            else:
                values = read_yaml_mapping(path, "options") if path else {}
            given = set(values) | set(arguments)
            values.update(arguments)
            for override in overrides:
                apply_override(values, override)
                given.add(override.split("=", 1)[0].strip())
            unknown = sorted(set(values) - set(self.owner))
            if unknown:
                raise ValueError(f"unknown option(s) {unknown}; this command has {sorted(self.owner)}")
            sections = []
            for entry in self.flags:
                names = {item.name for item in dataclasses.fields(entry.cls)}
                part = {name: value for name, value in values.items() if name in names}
                missing = [f"--{item.name.replace('_', '-')}" for item in entry.fields() if _default(item) is dataclasses.MISSING and item.name not in part]
                if missing:
                    raise ValueError(f"the following arguments are required: {', '.join(missing)}")
                sections.append(build_dataclass(entry.cls, part, "command line"))
        except (ValueError, TypeError, FileNotFoundError) as error:
            self.parser.error(str(error))
        return ParsedCommand(sections, config, given)

    def error(self, message: str):
        """Exit with the usage and `message` (argparse's code 2)."""
        self.parser.error(message)


@dataclasses.dataclass
class ParsedCommand:
    """`sections`: the flat dataclasses, in the order given; `config`: the nested config (or None);
    `given`: the option names set on the command line or in `--config FILE` (not left at their defaults)."""

    sections: list[Any]
    config: Any
    given: set[str]


__all__ = ["CommandLine", "Flags", "ParsedCommand", "option"]
