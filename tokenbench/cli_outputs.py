"""Where a command's results go: checked before anything is sent, written with a fallback after.

A benchmark can take an hour and its embedded Redis is gone once it ends, so a path that cannot be
written is an error before the run, and a write that still fails puts the result in a temporary
file instead of losing it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import orjson

from tokenbench.shared.errors import TokenbenchError

if TYPE_CHECKING:
    from tokenbench.aggregator.schema import Report, SweepDocument

DEFAULT_RESULTS_DIR = Path("tokenbench-results")


@dataclass(frozen=True)
class ResultFiles:
    """The files a command writes: the JSON (given, or the default one), and the CSV and HTML if asked for."""

    output: Path | None
    csv: Path | None
    html: Path | None
    save_by_default: bool  # no --output and no --no-save: the JSON goes to DEFAULT_RESULTS_DIR

    def json_path(self, name: str) -> Path | None:
        """Where the JSON goes; ``name`` (the run id) names the default file."""
        if self.output is not None:
            return self.output
        return DEFAULT_RESULTS_DIR / f"{name}.json" if self.save_by_default else None


def result_file_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--output, --no-save, --csv, --html."""
    for option in reversed([
        click.option("--output", type=click.Path(path_type=Path),
                     help=f"Write the JSON here [default: {DEFAULT_RESULTS_DIR}/<run id>.json]."),
        click.option("--no-save", is_flag=True, help="Write no JSON unless --output is given."),
        click.option("--csv", "csv_path", type=click.Path(path_type=Path),
                     help="Also write one CSV row per request, every measured field."),
        click.option("--html", "html_path", type=click.Path(path_type=Path),
                     help="Also write the self-contained HTML report (see `tokenbench plot`)."),
    ]):
        command = option(command)
    return command


def result_files_from_flags(flags: dict[str, Any]) -> ResultFiles:
    """Pops the options of ``result_file_options`` and checks every path can be written, now."""
    output, no_save = flags.pop("output"), flags.pop("no_save")
    files = ResultFiles(output=output, csv=flags.pop("csv_path"), html=flags.pop("html_path"),
                        save_by_default=output is None and not no_save)
    for flag, path in (("--output", files.output), ("--csv", files.csv), ("--html", files.html)):
        if path is not None:
            check_writable(path, flag)
    if files.save_by_default:
        target = DEFAULT_RESULTS_DIR if DEFAULT_RESULTS_DIR.exists() else Path.cwd()
        if not os.access(target, os.W_OK | os.X_OK):
            raise click.UsageError(f"cannot save the result in {target.resolve()} (not writable): give --output "
                                   "a writable path, or --no-save")
    return files


def check_writable(path: Path, flag: str) -> None:
    """A usage error naming ``flag`` unless ``path`` is a file that can be written or created."""
    try:
        _check_writable(path, flag)
    except OSError as exc:  # a name the file system refuses to look at: too long, a loop of links
        raise click.BadParameter(f"cannot write {path}: {exc.strerror or exc}", param_hint=f"'{flag}'") from None


def _check_writable(path: Path, flag: str) -> None:
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory", param_hint=f"'{flag}'")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise click.BadParameter(f"{path} is not writable", param_hint=f"'{flag}'")
        return
    folder = path.parent
    if not folder.is_dir():
        raise click.BadParameter(f"directory {folder} does not exist", param_hint=f"'{flag}'")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"directory {folder} is not writable", param_hint=f"'{flag}'")


def write_result_files(contents: list[tuple[Path, Callable[[], bytes]]]) -> None:
    """Write each file; one that cannot be written (the disk filled up, the folder went away) goes to
    a temporary file instead, so a finished benchmark is never lost. Says where each went, and ends
    in an error if any went astray."""
    failures = []
    for path, render in contents:
        content = render()
        try:
            if path.parent == DEFAULT_RESULTS_DIR:
                DEFAULT_RESULTS_DIR.mkdir(exist_ok=True)
            path.write_bytes(content)
        except OSError as exc:
            descriptor, spare = tempfile.mkstemp(prefix="tokenbench-", suffix=path.suffix)
            with os.fdopen(descriptor, "wb") as file:
                file.write(content)
            failures.append(f"cannot write {path}: {exc.strerror or exc}; it is saved in {spare} instead")
            continue
        click.echo(f"wrote {path}", err=True)
    if failures:
        raise TokenbenchError("; ".join(failures))


def load_result(path: Path) -> Report:
    """A result file for `compare` or `plot`, checked against the result's schema first: a file that
    is not one (or one of another version with fields missing) is a usage error naming what is wrong."""
    return _checked_result(path, _read_json(path))


def load_result_or_sweep(path: Path) -> Report | SweepDocument:
    """As ``load_result``; a sweep's document too."""
    from tokenbench.aggregator.schema import sweep_problem

    document = _read_json(path)
    if not (isinstance(document, dict) and "sweep" in document):
        return _checked_result(path, document)
    problem = sweep_problem(document)
    if problem is not None:
        raise click.BadParameter(f"{path} is not a tokenbench sweep this version can read: {problem}",
                                 param_hint="RESULTS")
    return cast("SweepDocument", document)


def _checked_result(path: Path, document: Any) -> Report:
    from tokenbench.aggregator.schema import result_problem

    problem = result_problem(document)
    if problem is not None:
        raise click.BadParameter(f"{path} is not a tokenbench result this version can read: {problem}",
                                 param_hint="RESULTS")
    return cast("Report", document)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="RESULTS") from None
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"{path} is not JSON: {exc}", param_hint="RESULTS") from None
