"""The CLI's jobs from Python: `run`, `sql`, `embed`, `sweep` and `report`.

Keyword arguments are the command's long options with `_` for `-` (`exclude_special=True` for
`--exclude-special`, `where_=` for `--where`); the CLI's own parser reads them, so defaults,
checks and error messages are the binary's. A list gives the option once per item, a dict gives
`KEY=VALUE` items (`partition={"step": 100}`), True a bare flag; None and False leave it out.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Union

from . import _native

PathLike = Union[str, "os.PathLike[str]"]


class LidscopeWarning(UserWarning):
    """A warning of a run (e.g. rows whose LID is not finite), as the CLI logs it."""


def _text(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _argv(options: Dict[str, Any]) -> List[str]:
    argv: List[str] = []
    for key, value in options.items():
        if key in ("json",):
            raise TypeError(f"{key}: the Python functions return data; there is no {key} option here")
        if value is None or value is False:
            continue
        flag = "--" + key.rstrip("_").replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):
            argv += [flag, ",".join(f"{k}={_text(v)}" for k, v in value.items())]
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, _text(v)]
        else:
            argv += [flag, _text(value)]
    return argv


def _paths(value: Union[PathLike, List[PathLike]]) -> List[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


def run(corpus: Union[PathLike, List[PathLike]], out: PathLike, *, embedding_column: str, quiet: bool = False, **options: Any) -> dict:
    """`lidscope run`: per-token LID of a corpus into the result directory `out`.

    Returns the run's manifest (what `lidscope run --json` prints: rows, mean_lid, global_twonn,
    timings, files, ...). The run's warnings are issued as `LidscopeWarning`. Options as the CLI's
    (below); `cluster="http://HOST:PORT"` runs it on a cluster.
    """
    argv = _argv({"corpus": _paths(corpus), "out": out, "embedding_column": embedding_column, "quiet": quiet, **options})
    manifest, issued = _native.run(argv)
    for w in issued:
        warnings.warn(w, LidscopeWarning, stacklevel=2)
    return json.loads(manifest)


def embed(model: PathLike, texts: Union[PathLike, List[PathLike]], out: PathLike, *, text_column: str, quiet: bool = False, **options: Any) -> dict:
    """`lidscope embed`: texts and a Hugging Face checkpoint into a corpus of per-token hidden
    states in `out`. Returns the summary `lidscope embed --json` prints (texts, tokens, columns,
    seconds, ...)."""
    argv = _argv({"model": model, "texts": _paths(texts), "out": out, "text_column": text_column, "quiet": quiet, **options})
    return json.loads(_native.embed(argv))


def sql(query: str, tables: Optional[Dict[str, Any]] = None):
    """`lidscope sql`: a query over named tables, as a `pyarrow.Table`.

    `tables` maps names to paths, registered as `lidscope sql --table NAME=PATH` does (a result
    directory gives NAME, NAME_runs, NAME_summary and NAME_tokens; a corpus, a reference or a
    CSV file gives NAME), or to Arrow tables (anything with `__arrow_c_stream__`: pyarrow,
    polars), which are read in place. `lid(embedding, 'reference.parquet', k)` and the other SQL
    functions of lidscope are there.
    """
    import pyarrow as pa

    named: Dict[str, Any] = {}
    for name, value in (tables or {}).items():
        named[name] = os.fspath(value) if isinstance(value, (str, os.PathLike)) else value
    capsule = _native.sql(query, named)
    return pa.RecordBatchReader.from_stream(_Stream(capsule)).read_all()


class _Stream:
    """Holds a result's Arrow C stream capsule for pyarrow to import."""

    def __init__(self, capsule: Any):
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._capsule


def sweep(spec: PathLike, *, quiet: bool = False, **options: Any) -> None:
    """`lidscope sweep SPEC.toml`: every run of a sweep specification that is not done yet."""
    _native.main(["sweep", os.fspath(spec)] + _argv({"quiet": quiet, **options}))


def report(results: PathLike, out: PathLike, *, quiet: bool = False, **options: Any) -> None:
    """`lidscope report RESULTS --out DIR`: the HTML page, figures and tables of a results
    directory."""
    _native.main(["report", os.fspath(results)] + _argv({"out": out, "quiet": quiet, **options}))


for _f, _name in ((run, "run"), (embed, "embed"), (sql, "sql"), (sweep, "sweep"), (report, "report")):
    _f.__doc__ = (_f.__doc__ or "") + "\n\nThe command's options (`lidscope " + _name + " --help`):\n\n" + _native.command_help(_name)
