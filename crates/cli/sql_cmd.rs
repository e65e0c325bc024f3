//! `lidscope sql`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use lidscope_engine::sql;

use crate::args::{FormatArg, SqlArgs};

/// A table of a query: a path, registered as `lidscope sql --table NAME=PATH` does, or record
/// batches already in memory.
pub enum Table {
    /// A result directory, a corpus (file, directory or glob), a reference file or a CSV file.
    Path(String),
    /// Batches of one schema.
    Batches(SchemaRef, Vec<RecordBatch>),
}

/// Runs `query` over `tables` (`NAME=PATH` pairs, registered as `lidscope sql` does).
pub fn query(tables: &[(String, String)], query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let tables: Vec<(String, Table)> = tables.iter().map(|(n, p)| (n.clone(), Table::Path(p.clone()))).collect();
    query_tables(tables, query)
}

/// [`query`] over tables from files or memory.
pub fn query_tables(tables: Vec<(String, Table)>, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
    rt.block_on(async {
        let ctx = sql::session();
        for (name, table) in tables {
            match table {
                Table::Path(path) => sql::register(&ctx, &name, &path).await?,
                Table::Batches(schema, batches) => sql::register_batches(&ctx, &name, schema, batches)?,
            }
        }
        let df = ctx.sql(query).await.map_err(|e| anyhow::anyhow!("in the query: {e}"))?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await.map_err(|e| anyhow::anyhow!("running the query: {e}"))?;
        anyhow::Ok((schema, batches))
    })
}

pub fn main(a: &SqlArgs) -> Result<()> {
    if a.format == FormatArg::Parquet && a.output.is_none() {
        bail!("--format parquet needs --output FILE");
    }
    let (schema, batches) = query(&a.tables, &a.query)?;
    let mut out: Box<dyn Write + Send> = match &a.output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(crate::stdout()),
    };
    let empty = RecordBatch::new_empty(schema.clone());
    let batches = if batches.is_empty() { vec![empty] } else { batches };
    match a.format {
        FormatArg::Table => writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&batches)?)?,
        FormatArg::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in &batches {
                w.write(b)?;
            }
        }
        FormatArg::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        FormatArg::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
            for b in &batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    out.flush()?;
    Ok(())
}
