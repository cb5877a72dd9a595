"""``--config FILE.toml``: a command's options from a TOML file (flags still win), and the resolved
options as the result JSON records them (no secrets)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click
import orjson

from tokenbench.shared.redis_conn import redact_url

SECRET_PARAMS = {"api_key"}  # options a config file may not set, nor a result record
CONFIG_FILE_META = "tokenbench.config_file"  # ctx.meta key: the --config file in use


def load_config_file(ctx: click.Context, _param: click.Parameter, path: Path | None) -> str | None:
    """``--config FILE``: the command's options from a TOML file become its defaults, so flags still win."""
    if path is None:
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}") from None
    ctx.default_map = {**(ctx.default_map or {}), **config_defaults(ctx, data, path)}
    ctx.meta[CONFIG_FILE_META] = str(path)
    return str(path)


config_option = click.option(
    "--config", type=click.Path(dir_okay=False, path_type=Path), callback=load_config_file, is_eager=True,
    expose_value=False, metavar="FILE.toml",
    help="Options from a TOML file (keys as the long flags without '--', e.g. base-url = ...); flags override.",
)


def config_defaults(ctx: click.Context, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's settings as click defaults (parameter name -> value), each checked as its flag would be."""
    by_key: dict[str, click.Parameter] = {}
    for param in ctx.command.params:
        if isinstance(param, click.Option) and param.name != "config":
            for flag in param.opts + param.secondary_opts:
                if flag.startswith("--"):
                    by_key[flag[2:]] = param
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        option = by_key.get(key) or by_key.get(key.replace("_", "-"))
        if option is None:
            raise click.BadParameter(f"{path}: unknown option {key!r} for `{ctx.command.name}`")
        if option.name in SECRET_PARAMS:
            raise click.BadParameter(f"{path}: {key}: keep secrets out of files; set TOKENBENCH_API_KEY "
                                     "(or the mode's variable) in the environment")
        value = _config_value(option, value)
        if isinstance(option, click.Option) and option.is_flag != isinstance(value, bool):
            wanted = "true or false" if option.is_flag else "a value, not true or false"
            raise click.BadParameter(f"{path}: {key}: takes {wanted}")
        try:
            option.process_value(ctx, value)
        except click.BadParameter as exc:
            raise click.BadParameter(f"{path}: {key}: {exc.message}") from None
        except (ValueError, TypeError, OverflowError) as exc:  # what no command line can hold, e.g. a NUL byte
            raise click.BadParameter(f"{path}: {key}: {exc}") from None
        defaults[str(option.name)] = value
    return defaults


def _config_value(param: click.Parameter, value: Any) -> Any:
    """TOML's richer values as the strings the flags take: tables for --slo and --extra-body, lists
    for comma-separated flags (e.g. sweep levels), one string for a repeatable flag."""
    if isinstance(value, dict):
        if param.name == "slo":
            return ",".join(f"{name}={limit}" for name, limit in value.items())
        return orjson.dumps(value).decode()
    if param.multiple:
        return [value] if isinstance(value, str) else value
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool | str):
        return value
    return str(value)  # a number or a date as the command line would give it: checked by the same rules


def resolved_config(ctx: click.Context) -> dict[str, Any]:
    """Every option of the command as it was finally set (file, then flags), ready for the result JSON:
    no API key, the Redis password masked."""
    config: dict[str, Any] = {"command": ctx.command.name, "config_file": ctx.meta.get(CONFIG_FILE_META)}
    for name, value in sorted(ctx.params.items()):
        if name in SECRET_PARAMS:
            continue
        if name == "redis_url" and value:
            value = redact_url(value)
        config[name] = _jsonable(value)
    return config


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(item) for item in value]
    return value
