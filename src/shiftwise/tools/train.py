"""``shiftwise train``: its options, generated from the metadata of
:class:`~shiftwise.training.TrainConfig`'s fields, become a config for
:func:`shiftwise.training.train` (see there for what training does).

The library's errors carry the config field they concern (``error.field``: ``optim.lr``);
this module is where they become the options the user typed (``--lr``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from shiftwise.errors import ShiftwiseError
from shiftwise.options import Option
from shiftwise.training import TrainConfig, TrainResult, config_from_options, train
from shiftwise.training.config import RECIPES, DeprecatedOptionWarning, iter_options, option_paths

__all__ = [
    "add_arguments",
    "config_from_args",
    "field_flag",
    "flag",
    "format_report",
    "options_in_errors",
    "register",
    "run",
]

logger = logging.getLogger(__name__)

_SECTION_TITLES = {
    "model": "model",
    "data": "data",
    "optim": "optimization (recipe fields: the recipe's value when not given)",
    "augment": "augmentation (recipe fields)",
    "sparse": "sparse training (shiftwise.sparse.Masking)",
    "run": "run",
}


def flag(option: str) -> str:
    """The command-line spelling of the option ``option`` (``"batch_size" -> "--batch-size"``)."""
    return f"--{option.replace('_', '-')}"


_OPTIONS = option_paths()


def field_flag(field: str, spell: Callable[[str], str] = flag) -> str:
    """The option of the config field ``field`` as ``spell`` writes it (``optim.lr`` ->
    ``--lr``); a name that is not a config field is returned unchanged."""
    return spell(_OPTIONS[field]) if field in _OPTIONS else field


def _recipe_defaults(section: str, name: str) -> str:
    """``"cpu 6, paper 300"``: each recipe's value of the field (empty when no recipe sets it)."""
    values = {recipe: getattr(getattr(RECIPES[recipe], section), name) for recipe in RECIPES}
    return ", ".join(f"{r} {v}" for r, v in sorted(values.items()) if v is not None)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _help(path: str, kind: type, option: Option) -> str:
    """The option's help: what it is, its range, its default or each recipe's value."""
    section, name = path.split(".")
    notes = []
    if option.low is not None or option.high is not None:
        notes.append(option.bounds())
    recipe = _recipe_defaults(section, name)
    if recipe:
        notes.append(recipe)
    elif option.default not in (None, {}) and kind is not bool:
        notes.append(f"default {option.default}")
    return option.help + (f" ({'; '.join(notes)})" if notes else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field, in a group per section; every default is
    ``None`` ("not given": the recipe's or default value, or when resuming, the saved one)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, path, kind, option in iter_options():
        section = path.split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(_SECTION_TITLES[section])
        arguments: dict[str, Any] = {
            "dest": name,
            "default": None,
            "help": _help(path, kind, option),
        }
        if kind is bool:
            arguments["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            arguments.update(type=_json_object, metavar="JSON")
        else:
            arguments["type"] = kind
            if option.choices and not callable(option.choices):
                arguments["choices"] = option.allowed()
        groups[section].add_argument(flag(name), **arguments)
        for old in option.deprecated:
            arguments.update(dest=old, help=argparse.SUPPRESS)
            groups[section].add_argument(flag(old), **arguments)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``shiftwise train`` options (errors name options)."""
    names = {name for name, _, _, _ in iter_options()}
    names |= {old for _, _, _, option in iter_options() for old in option.deprecated}
    options = {k: v for k, v in vars(args).items() if k in names and v is not None}
    with options_in_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        config = config_from_options(options)
    for warning in caught:  # deprecated option names, said in the user's words
        if isinstance(warning.message, DeprecatedOptionWarning):
            old, new = flag(warning.message.old), flag(warning.message.new)
            logger.warning("%s is deprecated, use %s", old, new)
    return config


@contextlib.contextmanager
def options_in_errors(spell: Callable[[str], str] = flag) -> Iterator[None]:
    """Within this context, a library error's fields (``error.field``, ``error.also``) are
    respelled as options (as ``spell`` writes them)."""
    try:
        yield
    except ShiftwiseError as error:
        raise error.renamed(lambda field: field_flag(field, spell)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (bundled data by default)",
        description="Train an image classifier; with torchrun it runs data-parallel (DDP).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def format_report(result: TrainResult) -> str:
    """The few lines ``shiftwise train`` prints at the end."""
    ema = f" (EMA {result.ema_top1:.2f}%)" if result.ema_top1 is not None else ""
    faults = []
    if result.skipped_steps:
        faults.append(f"{result.skipped_steps} non-finite steps skipped")
    if result.bad_images:
        faults.append(f"{result.bad_images} unreadable images skipped")
    return "\n".join(
        [
            f"{result.model} on {result.data}: top-1 {result.top1:.2f}%{ema}, "
            f"top-5 {result.top5:.2f}% (chance {result.chance:.2f}%), "
            f"{result.epochs} epochs in {result.seconds:.0f} s"
            + (f" ({', '.join(faults)})" if faults else ""),
            f"  training curve: {result.curve}",
            f"  log:            {result.log_csv}",
            f"  resume point:   {result.resume_point}",
            f"  final weights:  {result.weights}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with options_in_errors():
        result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_report(result))
    return 0
