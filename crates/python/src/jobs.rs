//! The CLI's jobs from Python: `run`, `embed`, `sql` (and `sweep`, `report` through [`main`]).
//!
//! The Python layer turns keyword arguments into the CLI's flags (`k=64` -> `--k 64`); the CLI's
//! own parser reads them, so that defaults, checks and messages are the binary's. Results come
//! back as data (the manifest, the summary, an Arrow table), not as printed lines.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use lidscope::args::{Cli, Command};
use lidscope::sql_cmd::{query_tables, Table};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};

use crate::stream;

/// Parses `lidscope <argv...>` with the binary's parser.
fn parse(argv: Vec<String>) -> PyResult<Cli> {
    let args = std::iter::once("lidscope".to_string()).chain(argv);
    Cli::try_parse_from(args).map_err(|e| {
        let text = e.render().to_string();
        let text = text.trim_end().trim_start_matches("error: ");
        match e.kind() {
            ErrorKind::UnknownArgument => PyTypeError::new_err(text.to_string()),
            _ => PyValueError::new_err(text.to_string()),
        }
    })
}

/// A job's failure with the message `lidscope` prints (the whole chain of causes).
fn failed(e: anyhow::Error) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}

/// `lidscope run ...`: the manifest as JSON text, and the run's warnings.
#[pyfunction]
pub fn run(py: Python<'_>, argv: Vec<String>) -> PyResult<(String, Vec<String>)> {
    let cli = parse(std::iter::once("run".to_string()).chain(argv).collect())?;
    let Command::Run(a) = &cli.command else { unreachable!("parsed as run") };
    let summary = py.detach(|| lidscope::run_cmd::run(a, cli.quiet)).map_err(failed)?;
    let manifest = serde_json::to_string(&summary.manifest).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((manifest, summary.warnings))
}

/// `lidscope embed ...`: the summary `--json` prints, as JSON text.
#[pyfunction]
pub fn embed(py: Python<'_>, argv: Vec<String>) -> PyResult<String> {
    let cli = parse(std::iter::once("embed".to_string()).chain(argv).collect())?;
    let Command::Embed(a) = &cli.command else { unreachable!("parsed as embed") };
    let summary = py.detach(|| lidscope::embed_cmd::embed(a, cli.quiet)).map_err(failed)?;
    Ok(lidscope::embed_cmd::summary_json(&summary).to_string())
}

/// Any other command line (`sweep ...`, `report ...`), as the binary runs it.
#[pyfunction]
pub fn main(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    let cli = parse(argv)?;
    py.detach(|| lidscope::dispatch(&cli)).map_err(failed)
}

/// `lidscope sql QUERY --table NAME=PATH ...` over paths and Arrow tables: the result as an
/// Arrow C stream capsule. `tables` maps names to paths (str) or objects with
/// `__arrow_c_stream__`, whose buffers the query reads in place.
#[pyfunction]
pub fn sql<'py>(py: Python<'py>, query: String, tables: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyCapsule>> {
    let mut list = Vec::with_capacity(tables.len());
    for (name, value) in tables.iter() {
        let name: String = name.extract().map_err(|_| PyTypeError::new_err("tables: the names must be strings"))?;
        let table = match value.extract::<String>() {
            Ok(path) => Table::Path(path),
            Err(_) => {
                let (schema, batches) = stream::import(&value, &name)?;
                Table::Batches(schema, batches)
            }
        };
        list.push((name, table));
    }
    let (schema, batches) = py.detach(|| query_tables(list, &query)).map_err(failed)?;
    stream::export(py, schema, batches)
}

/// The `--help` text of `lidscope <command>`, for the Python functions' docstrings.
#[pyfunction]
pub fn command_help(name: &str) -> PyResult<String> {
    let mut cli = Cli::command();
    let cmd = cli.find_subcommand_mut(name).ok_or_else(|| PyValueError::new_err(format!("no command {name}")))?;
    Ok(cmd.render_long_help().to_string())
}
