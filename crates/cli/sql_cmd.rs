//! `lidscope sql`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use lidscope_engine::sql;

use crate::args::{FormatArg, SqlArgs};

/// Runs `query` over `tables` (`NAME=PATH` pairs, registered as `lidscope sql` does).
pub fn query(tables: &[(String, String)], query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
    rt.block_on(async {
        let ctx = sql::session();
        for (name, path) in tables {
            sql::register(&ctx, name, path).await?;
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
        None => Box::new(std::io::stdout()),
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
