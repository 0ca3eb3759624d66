"""A command's options, made from its settings' dataclasses (`waveinit.configs.option` fields).

A command is a list of `Section`s: a table of its settings (`[train]`, `[data]`, ...) with the
dataclass instance holding its defaults. `command` gives the command one option per field, plus
`--config FILE.toml` (the tables, any subset of their fields) and `--print-config` (the resolved
settings as that file). A value comes from the command line, else the file, else the section's
default; the command's body receives them as a `Job`, one dataclass per section.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from waveinit.errors import WaveError

from .common import handles_errors

try:  # recent Typer releases vendor click
    from typer._click.core import ParameterSource
except ImportError:
    from click.core import ParameterSource


@dataclass(frozen=True)
class Section:
    name: str  # its table in a --config file, and its attribute of the Job
    base: object  # a dataclass instance: the defaults, and what --help shows
    only: tuple[str, ...] | None = None  # the fields this command takes (default: every option field)
    helps: dict[str, str] = field(default_factory=dict)  # field -> this command's help for it
    # the defaults given the sections resolved before this one (wave train --init: fine-tuning's)
    choose: Callable[[dict], object] | None = None


class Job:
    """A command's resolved settings: one dataclass instance per section, by its name."""

    def __init__(self, sections: list[Section], values: dict[str, object]):
        self._sections = sections
        self.__dict__.update(values)

    def settings(self) -> dict[str, dict]:
        """The settings as {table: {field: value}}, JSON-able (what --print-config prints and provenance records)."""
        return {s.name: {f.name: _plain(getattr(getattr(self, s.name), f.name)) for f in fields_of(s)} for s in self._sections}


def fields_of(section: Section) -> list[dataclasses.Field]:
    found = [f for f in dataclasses.fields(section.base) if "option" in f.metadata]
    if section.only is None:
        return found
    by_name = {f.name: f for f in found}
    return [by_name[name] for name in section.only]


def command(app: typer.Typer, name: str, *sections: Section):
    """Register `body(job: Job)` as command `name` of `app`, with the sections' options."""

    def register(body):
        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        for section in sections:
            hints = typing.get_type_hints(type(section.base))
            for f in fields_of(section):
                params.append(_parameter(section, f, hints[f.name]))
        params += [
            inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[Path], typer.Option(
                "--config", help="Read settings from this TOML file (as --print-config writes it); options given here override it.")]),
            inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, typer.Option(
                "--print-config", help="Print the resolved settings as TOML (what --config reads) and exit.")]),
        ]

        def run(ctx: typer.Context, config_file: Path | None = None, print_config: bool = False, **given):
            file = read_config(config_file) if config_file is not None else {}
            job = resolve(sections, ctx, given, file, f"--config {config_file}")
            if print_config:
                typer.echo(to_toml(job.settings()), nl=False)
                return None
            return body(job)

        run.__signature__ = inspect.Signature(params)
        run.__name__, run.__doc__ = body.__name__, body.__doc__
        app.command(name)(handles_errors(run))
        return body

    return register


def _key(section: Section, f: dataclasses.Field) -> str:
    return f"{section.name}__{f.name}"


def _parameter(section: Section, f: dataclasses.Field, hint) -> inspect.Parameter:
    return inspect.Parameter(_key(section, f), inspect.Parameter.KEYWORD_ONLY, default=getattr(section.base, f.name),
                             annotation=Annotated[hint, _typer_option(f, section.helps.get(f.name))])


def _typer_option(f: dataclasses.Field, help: str | None = None):
    """The typer.Option of an `option` field (its flag, help, panel and limits)."""
    meta = f.metadata["option"]
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    limits = {k: meta[k] for k in ("min", "max") if meta[k] is not None}
    return typer.Option(flag, help=help or meta["help"], rich_help_panel=meta["panel"], **limits)


def annotated(cls: type, name: str):
    """A field of a settings dataclass as an option type for a hand-written command
    (`value: annotated(RunOptions, "threads") = None`): the same flag, help and panel."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return Annotated[typing.get_type_hints(cls)[name], _typer_option(f)]


def resolve(sections, ctx, given: dict, file: dict[str, dict], source: str = "--config") -> Job:
    """Each section's dataclass: the command line over the file (`source` names it) over the defaults."""
    known = {s.name: {f.name for f in fields_of(s)} for s in sections}
    for table, values in file.items():
        if table not in known:
            raise WaveError(f"{source}: unknown table [{table}]: this command reads {', '.join(f'[{t}]' for t in known)}")
        unknown = sorted(set(values) - known[table])
        if unknown:
            raise WaveError(f"{source}: [{table}] has no setting {unknown[0]!r} for this command: it takes {', '.join(sorted(known[table]))}")
    done = {}
    for section in sections:
        base = section.choose(done) if section.choose is not None else section.base
        hints = typing.get_type_hints(type(section.base))
        values = {}
        for f in fields_of(section):
            if ctx.get_parameter_source(_key(section, f)) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                values[f.name] = given[_key(section, f)]
            elif f.name in file.get(section.name, {}):
                values[f.name] = _from_file(f"{source}: [{section.name}] {f.name}", f, hints[f.name], file[section.name][f.name])
        done[section.name] = dataclasses.replace(base, **values)
    return Job(list(sections), done)


def read_config(path: Path) -> dict[str, dict]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise WaveError(f"--config {path}: no such file (write one with --print-config > {path.name})") from None
    except tomllib.TOMLDecodeError as e:
        raise WaveError(f"--config {path}: not valid TOML ({e}): fix the file, or write it again with --print-config") from None
    for table, values in data.items():
        if not isinstance(values, dict):
            raise WaveError(f"--config {path}: {table!r} is not a table: settings go under their table, e.g. [train] epochs = 5")
    return data


_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path (a string)"}


def _from_file(where: str, f: dataclasses.Field, hint, value):
    """A file's value as the field's type, within its limits; `where` names it in errors."""
    kind = next(a for a in (typing.get_args(hint) or (hint,)) if a is not type(None))
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int)) or (kind is Path and isinstance(value, str))
    if not ok or (kind is not bool and isinstance(value, bool)):
        raise WaveError(f"{where} must be {_KINDS[kind]}, got {value!r}")
    value = kind(value)
    low, high = f.metadata["option"]["min"], f.metadata["option"]["max"]
    if low is not None and value < low:
        raise WaveError(f"{where} must be at least {low}, got {value!r}")
    if high is not None and value > high:
        raise WaveError(f"{where} must be at most {high}, got {value!r}")
    return value


def _plain(value):
    return str(value) if isinstance(value, Path) else value


def to_toml(settings: dict[str, dict]) -> str:
    """The settings as TOML; an unset value (None) is a comment, so the file leaves it unset too."""
    lines = []
    for table, values in settings.items():
        lines += [f"[{table}]"]
        for key, value in values.items():
            lines.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ("nan" if value != value else "inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's
