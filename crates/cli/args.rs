//! Command-line arguments (clap derive). First doc line = `-h`, the rest = `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Local intrinsic dimension (LID) of language-model embeddings, token by token.
///
/// lidscope reads per-token hidden states from Parquet, finds each token's k nearest reference
/// tokens, estimates TwoNN LID on that neighbourhood, and writes Parquet tables you can query.
#[derive(Parser, Debug)]
#[command(name = "lidscope", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug); LIDSCOPE_LOG or RUST_LOG override.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors; no progress bar, no summary line.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure per-token LID of a corpus and write result tables.
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Generate a small synthetic corpus and run on it: a first look, no data needed.
    #[command(after_long_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),
    /// Query results, corpora and references with SQL (DataFusion), including lid().
    #[command(after_long_help = SQL_EXAMPLES)]
    Sql(SqlArgs),
    /// Benchmark the paper's setting (60,000 x 768, k = 128) against the machine's sgemm rate.
    #[command(after_long_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Draw a result directory as an SVG picture: the LID distribution of each run and, for
    /// several runs (partitions), each run's mean with its 10th-90th percentile band.
    #[command(after_long_help = PLOT_EXAMPLES)]
    Plot(PlotArgs),
    /// Write a report on a result directory: summary.csv, summary.parquet, SVG figures (mean LID
    /// against step, distributions per run) and an index.html that shows them, readable offline.
    #[command(after_long_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Run every corpus a sweep spec (TOML) names, incrementally; --watch keeps it up to date.
    #[command(after_long_help = SWEEP_EXAMPLES)]
    Sweep(SweepArgs),
    /// Serve a cluster: the job API and a Ballista scheduler on one port, behind a bearer token.
    #[command(after_long_help = COORDINATOR_EXAMPLES)]
    Coordinator(CoordinatorArgs),
    /// Join a cluster as a worker (a Ballista executor with lidscope's functions).
    #[command(after_long_help = WORKER_EXAMPLES)]
    Worker(WorkerArgs),
    /// Turn texts and a Hugging Face checkpoint into a corpus of per-token hidden states.
    #[command(after_long_help = EMBED_EXAMPLES)]
    Embed(EmbedArgs),
    /// Make a cluster CA and node certificates for mutual TLS (a first try; use your own PKI
    /// where you have one).
    #[command(after_long_help = CERTS_EXAMPLES)]
    Certs(CertsArgs),
}

const CERTS_EXAMPLES: &str = "Examples:
  # A CA, a coordinator, a worker and a client, all reachable as localhost / 127.0.0.1
  lidscope certs --out certs --node coordinator --node worker-1 --node client
  # Hosts of a network: the names and addresses peers dial
  lidscope certs --out certs --node coordinator=coord.lan,10.0.0.5 --node worker-1=10.0.0.6
  # Later, one more worker signed by the same CA (certs/ca.key is reused)
  lidscope certs --out certs --node worker-2=10.0.0.7

Writes <DIR>/ca.pem (give it to every node as --tls-ca), <DIR>/ca.key (keep it off the nodes) and
<DIR>/<NAME>.pem, <DIR>/<NAME>.key per node (its --tls-cert and --tls-key; keys mode 0600).
Every node certificate serves both ends of a connection. Nothing existing is overwritten.";

const EMBED_EXAMPLES: &str = "Examples:
  # The last layer of all-MiniLM-L6-v2 for every text of texts.parquet, then its LID
  lidscope embed --model models/all-MiniLM-L6-v2 --texts texts.parquet --text-column text \\
                 --out hidden/minilm
  lidscope run --corpus hidden/minilm --embedding-column hidden_L6 --id-columns seq_id,position \\
               --out results/minilm

  # Every layer of a checkpoint, texts named by their own id column, 256 tokens at most
  lidscope embed --model ckpt-1000/ --texts 'texts/*.parquet' --text-column text --id-columns doc_id \\
                 --layers all --max-length 256 --out hidden/ckpt-1000

  # A decoder's every layer and its last block before the final norm (hidden_L2_prenorm here)
  lidscope embed --model checkpoints/step-4900 --texts texts.parquet --text-column text \\
                 --id-columns a,b --layers all,prenorm --out hidden/step=4900

Architectures: BERT (incl. MiniLM), RoBERTa, GPT-2, Llama, Qwen2 (config.json, model.safetensors or
shards with model.safetensors.index.json, tokenizer.json). Output: one row per token with the id
columns (default seq_id, the text's row over the inputs), position, token_id, token, special, the
inputs' other columns, and hidden_L<i> for each layer (0 = the embedding output; for GPT-2, Llama
and Qwen2 the last one is after the final norm, as in transformers, and hidden_L<n>_prenorm before
it).";

/// `lidscope embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Checkpoint directory in the Hugging Face layout.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Parquet files, directories or globs with one text per row.
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub texts: Vec<String>,
    /// The column holding the texts.
    #[arg(long, value_name = "COL")]
    pub text_column: String,
    /// Output corpus directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Columns naming a text (default: seq_id, the row's index over the inputs in order).
    #[arg(long, value_delimiter = ',', value_name = "C1,C2,...")]
    pub id_columns: Vec<String>,
    /// Layers in Hugging Face's numbering (0 = embeddings, -1 = last), or `all`; `prenorm` adds
    /// the last block's output before the final norm (decoders), as hidden_L<n>_prenorm.
    #[arg(long, default_value = "-1", value_name = "L1,L2,...|all[,prenorm]", allow_hyphen_values = true)]
    pub layers: String,
    /// Truncate each text to this many tokens, special tokens included [default: 512, or the
    /// checkpoint's positions when fewer].
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,
    /// Texts per forward pass, at most. A pass packs its texts' tokens without padding.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), value_name = "B")]
    pub batch_size: u32,
    /// Tokens per forward pass, at most (a longer text runs alone): about 2,000 keep the matrix
    /// products near the machine's GEMM rate with the activations in cache.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub batch_tokens: u32,
    /// Replace an existing --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

const COORDINATOR_EXAMPLES: &str = "Examples:
  # A coordinator for workers on this host (every port on 127.0.0.1)
  lidscope coordinator --bind 127.0.0.1:50050 --token-file token
  # For workers on other hosts of a private network
  lidscope coordinator --bind 10.0.0.5:50050 --token-file /etc/lidscope/token

  # Mutual TLS on every port (certificates from `lidscope certs`); clients dial https://
  lidscope coordinator --bind 10.0.0.5:50050 --token-file token \
      --tls-ca certs/ca.pem --tls-cert certs/coordinator.pem --tls-key certs/coordinator.key

Workers, clients and this coordinator share a secret: --token-file F or $LIDSCOPE_TOKEN. Its port
carries both the job API and the Ballista scheduler, and refuses calls without the token. Without
TLS the workers' Arrow Flight ports have no authentication: keep them on a private network. With
--tls-* every connection (clients and workers to this port, anyone to a worker's Flight port)
needs a certificate signed by the cluster's CA, and the token stays as a second factor.";

const WORKER_EXAMPLES: &str = "Examples:
  lidscope worker --coordinator http://127.0.0.1:50050 --token-file token
  # On another host of the same private network
  lidscope worker --coordinator http://10.0.0.5:50050 --token-file token --bind 10.0.0.6
  # With mutual TLS (the certificate names the address given to --advertise, or --bind)
  lidscope worker --coordinator https://10.0.0.5:50050 --token-file token --bind 10.0.0.6 \
      --tls-ca certs/ca.pem --tls-cert certs/worker-1.pem --tls-key certs/worker-1.key";

const RUN_EXAMPLES: &str = "Examples:
  # The paper's setting: 60,000-token reference sampled from a 150,000-token pool, k = 128
  lidscope run --corpus hidden/layer6/ --embedding-column hidden_L6 \\
               --id-columns seq_id,position --out results/layer6

  # A corpus from `lidscope embed`: special tokens are measured but not sampled as reference
  lidscope run --corpus emb/ --embedding-column hidden_L6 --id-columns seq_id,position \\
               --exclude-special --out results/minilm

  # Against a fixed reference file, maximum-likelihood TwoNN, machine-readable summary
  lidscope run --corpus 'ckpt-*/part-*.parquet' --embedding-column emb --id-columns seq_id,position \\
               --reference ref.parquet --estimator twonn-mle --out results/mle --json

  # Only the answer position of each text, and only the validation texts
  lidscope run --corpus hidden/step=4900 --embedding-column hidden_L2_prenorm --id-columns seq_id,position \\
               --where \"position = 3 AND split = 'validation'\" --k 64 --out results/answer

  # Three estimators from one search: lid (TwoNN), lid_twonn, lid_mle, lid_lpca_fo
  lidscope run --corpus emb/ --embedding-column hidden_L6 --id-columns seq_id,position \\
               --estimator twonn,mle,lpca-fo --out results/three

  # On a cluster (paths on storage every node sees at the same path); Ctrl-C cancels, and the
  # same command resumes an interrupted run
  lidscope run --cluster http://10.0.0.5:50050 --token-file token --corpus /shared/hidden/ \\
               --embedding-column hidden_L6 --id-columns seq_id,position --out /shared/results/layer6";

const SQL_EXAMPLES: &str = "Examples:
  # Mean LID and row count of a run, machine-readable
  lidscope sql --table lid=results/layer6 --format csv \"SELECT avg(lid) AS m, count(*) AS n FROM lid\"

  # One row per run (manifests), and mean LID per checkpoint across partitioned runs
  lidscope sql --table lid=results \"SELECT * FROM lid_runs\"
  lidscope sql --table lid=results \"SELECT checkpoint, avg(lid) FROM lid GROUP BY checkpoint ORDER BY checkpoint\"

  # Per-run statistics (n, mean, std, median, p10, p90), and the tokens with the highest mean LID
  lidscope sql --table lid=results \"SELECT * FROM lid_summary ORDER BY checkpoint\"
  lidscope sql --table lid=results \"SELECT token, n, mean FROM lid_tokens WHERE n >= 20 ORDER BY mean DESC LIMIT 20\"

  # LID straight from SQL against a reference file
  lidscope sql --table c=corpus/ \"SELECT seq_id, lid(hidden_L6, 'results/layer6/reference.parquet', 128)['lid'] FROM c\"";

const DEMO_EXAMPLES: &str = "Examples:
  lidscope demo
  lidscope demo --rows 20000 --dim 256 --out /tmp/lidscope-demo";

const PLOT_EXAMPLES: &str = "Examples:
  lidscope plot results/layer6 --out layer6.svg
  # A sweep written with --partition: one outline and one mean per run
  lidscope plot sweep --out sweep.svg --bins 80";

const REPORT_EXAMPLES: &str = "Examples:
  lidscope report results/layer6 --out report/
  # A sweep written with --partition model=...,step=...: mean LID against step, one line per model
  lidscope report sweep --out sweep-report
  # Another key on the x axis (its values must be numbers), finer histograms
  lidscope report sweep --out sweep-report --x layer --bins 100
  # Training metrics (metrics.csv: step, val_acc, ...) beside mean LID, with their correlations
  lidscope report sweep --out sweep-report --metrics metrics.csv
  # Runs made with --estimator twonn,mle: the report of their MLE values
  lidscope report sweep --out mle-report --estimator mle

The x axis of the trend chart is the partition key step, else checkpoint, else epoch, else the
first key whose values are all numbers; one line per combination of the other keys. Open
sweep-report/index.html in a browser: it needs no network.";

const SWEEP_EXAMPLES: &str = "Examples:
  # What would run, and why (new, changed, done)
  lidscope sweep sweep.toml --dry-run
  # Run what is missing; run again at once and nothing is run
  lidscope sweep sweep.toml
  # Keep the results up to date as checkpoints appear; Ctrl-C stops after the runs in flight
  lidscope sweep sweep.toml --watch --interval 120
  # On a cluster, four runs in flight
  lidscope sweep sweep.toml --cluster http://10.0.0.5:50050 --token-file token --runs-in-flight 4

A spec (paths relative to it):
  results = \"results/\"
  embedding_column = \"hidden\"
  id_columns = [\"seq_id\", \"position\"]
  k = 128
  reference_size = 60000

  [[corpus]]
  pattern = \"emb/{model}/step-{step}/{dataset}/layer-{layer}.parquet\"

Every match is one run, partitioned by its captures; the results directory is one table for
lidscope sql and lidscope report. Runs that share a dataset are measured on the same tokens.
The user guide's docs/sweeps.md describes every key.";

const BENCH_EXAMPLES: &str = "Examples:
  # The performance issue's settings, k = 128: 60,000 x 768 as its own reference (sampled, then
  # the same rows as a file), and 120,000 x 384 against a 20,000-row reference file
  lidscope bench
  # A quicker look, and the k-d tree crossover table
  lidscope bench --rows 10000 --corpus-rows 0 --kdtree --json
  # This build against the previous release, same corpus, alternating runs
  lidscope bench --against ./lidscope-previous --repeat 3
  # The cluster's overhead and recovery: 2 million 64-d tokens, a 4,000-row reference, k = 32
  lidscope bench --cluster --rows 2000000 --dim 64 --k 32
  # The same with corpus and results on an S3-compatible store (endpoint and keys in AWS_*)
  lidscope bench --cluster --rows 2000000 --dim 64 --k 32 --s3 s3://lidscope/bench
  # Real hidden states beside the synthetic settings: the corpus as its own sample, then against
  # a 4,000-row sample of it (the search path the probe chose, and why, is printed for each)
  lidscope bench --real hidden/minilm --real-column hidden_L6
  lidscope bench --real shared/fixtures/minilm_fortunes.parquet --no-synthetic --json
  # Tokens per second of `lidscope embed` on a checkpoint (256 texts of 128 tokens, packed passes)
  lidscope bench --embed models/all-MiniLM-L6-v2
  # ... on real texts of mixed length (a Parquet column of texts), with the share of the sgemm rate
  lidscope bench --embed models/all-MiniLM-L6-v2 --embed-texts texts.parquet --text-column text
  # What each estimator costs per query beside the search (the paper's setting, k = 128)
  lidscope bench --estimators --rows 20000";

/// The estimators of `--estimator a,b,...`, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct EstimatorList(pub Vec<lidscope_kernel::LocalEstimator>);

fn parse_estimators(s: &str) -> Result<EstimatorList, String> {
    lidscope_kernel::parse_estimators(s).map(EstimatorList).map_err(|e| e.to_string())
}

/// Neighbour search path.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SearchArg {
    /// k-d tree in low dimensions where it is faster; else, on AVX512_VNNI CPUs, int8 candidates
    /// where a probe of the reference says their window pays, or else int8-fine (16,000 reference
    /// rows or more) or int16; else float32 GEMM.
    Auto,
    /// Blocked float32 GEMM with exact float64 re-ranking.
    Gemm,
    /// Candidates from exact int8 products within a proven bound, exact float64 re-ranking
    /// (AVX512_VNNI CPUs).
    Int8,
    /// Candidates from exact 16-bit integer products (a window about 50 times narrower than
    /// int8's at half its rate), exact float64 re-ranking (AVX512_VNNI CPUs).
    Int16,
    /// Candidates from int8 products, the pairs their window cannot settle re-measured with
    /// 16-bit products, exact float64 re-ranking (AVX512_VNNI CPUs).
    Int8Fine,
    /// kiddo k-d tree (low dimensions only).
    Kdtree,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Corpus: Parquet files, directories of Parquet files, or globs.
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub corpus: Vec<String>,
    /// The embedding column: FixedSizeList or List of Float16/Float32/Float64.
    #[arg(long, value_name = "COL")]
    pub embedding_column: String,
    /// Output directory: data/*.parquet, reference.parquet, manifest.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Columns whose values name a token (e.g. seq_id,position).
    ///
    /// A corpus row with the same identity as a reference row is left out of its own
    /// neighbourhood, and the reference sample is drawn by identity, so that every checkpoint of a
    /// model gets the same tokens. Without it, identity is (file, row index).
    #[arg(long, value_delimiter = ',', value_name = "C1,C2,...")]
    pub id_columns: Vec<String>,
    /// Neighbourhood size.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(3..))]
    pub k: u32,
    /// Local estimators, comma-separated, all from one neighbour search [default: twonn].
    ///
    /// The first is the `lid` column; with the option given, each also gets a column
    /// `lid_<name>` (`-` as `_`) and its mean in the manifest. Names: twonn (the paper's,
    /// scikit-dimension 0.3.4), twonn-v05 (scikit-dimension 0.5.0's convention), twonn-mle, mle,
    /// mle-unbiased (Levina-Bickel), mom, tle, lpca-fo, lpca-fan, lpca-ratio, lpca-pr
    /// (participation ratio), lpca-kaiser, lpca-broken-stick. lPCA thresholds after a colon:
    /// lpca-fo:alpha=0.1, lpca-fan:alpha=10:beta=0.8:p=0.95.
    #[arg(long, value_name = "NAME[,NAME...]", value_parser = parse_estimators)]
    pub estimator: Option<EstimatorList>,
    /// Fraction of the largest distance ratios discarded by TwoNN.
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    pub discard_fraction: f64,
    /// A reference file (identity columns + the embedding column) instead of a sample.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["reference_size", "pool", "seed", "exclude_special", "sample_exclude"])]
    pub reference: Option<PathBuf>,
    /// Reference rows sampled from the corpus (after dropping duplicate vectors).
    #[arg(long, default_value_t = 60_000, value_name = "N")]
    pub reference_size: usize,
    /// Rows in the seeded random pool the sample is drawn from.
    #[arg(long, default_value_t = 150_000, value_name = "P")]
    pub pool: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 42, value_name = "S")]
    pub seed: u64,
    /// Keep special tokens ([CLS], [SEP], <s>, </s>, ...) out of the reference sample.
    ///
    /// Rows whose boolean column `special` (written by `lidscope embed`) is true are still
    /// measured, but never chosen as reference rows. Same as --sample-exclude special.
    #[arg(long, conflicts_with = "sample_exclude")]
    pub exclude_special: bool,
    /// Keep the rows whose boolean column COL is true out of the reference sample.
    #[arg(long, value_name = "COL")]
    pub sample_exclude: Option<String>,
    /// Measure only the rows for which this SQL predicate over the corpus's columns is true,
    /// e.g. "position = 3", "split = 'validation'", "NOT special".
    ///
    /// Rows it rejects (or leaves null) are neither measured nor sampled; the manifest records it.
    #[arg(long = "where", value_name = "PREDICATE")]
    pub where_: Option<String>,
    /// Replace an existing result in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Corpus rows per batch (memory: the reference plus a few batches).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,
    /// Neighbour search path.
    #[arg(long, value_enum, default_value_t = SearchArg::Auto)]
    pub search: SearchArg,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
    /// Run keys, e.g. model=bert,checkpoint=300: results go to <DIR>/data/model=bert/checkpoint=300/.
    ///
    /// Runs written into one <DIR> under different partitions form one table for `lidscope sql`;
    /// each partition keeps its manifest next to its files and its reference under
    /// <DIR>/references/<partition>/.
    #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE,...")]
    pub partition: Vec<(String, String)>,
    /// Print the manifest as JSON on stdout instead of the summary line.
    #[arg(long)]
    pub json: bool,
    /// Run on the cluster whose coordinator is at this URL (http://HOST:PORT, or https:// with
    /// --tls-*).
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// With --cluster: the file holding the cluster's token (default: $LIDSCOPE_TOKEN).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub token_file: Option<PathBuf>,
    /// With --cluster: corpus rows per shard (one task each; default: the coordinator's).
    #[arg(long, value_name = "ROWS", requires = "cluster", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_rows: Option<u64>,
    // With --cluster https://...: this client's certificate and the cluster's CA.
    #[command(flatten, next_help_heading = "Mutual TLS")]
    pub tls: TlsArgs,
}

/// Mutual TLS: all three files or none.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Mutual TLS: the cluster's CA certificate (PEM); peers must present a certificate it signed.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: this node's certificate (PEM), signed by the CA.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: this node's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// The directory to write into (made if missing; a CA already there signs the new nodes).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A node: NAME, or NAME=HOST,... with the DNS names and IP addresses peers dial it by (a
    /// bare NAME: NAME, localhost and 127.0.0.1). Repeat per node.
    #[arg(long = "node", value_name = "NAME[=HOST,...]", required = true, value_parser = parse_node)]
    pub nodes: Vec<lidscope_cluster::certs::Node>,
}

fn parse_node(s: &str) -> Result<lidscope_cluster::certs::Node, String> {
    lidscope_cluster::certs::Node::parse(s)
}

#[derive(Args, Debug, Clone)]
pub struct CoordinatorArgs {
    /// HOST:PORT to listen on (port 0: a free port, printed at start).
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: String,
    /// The file holding the cluster's token (default: $LIDSCOPE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The host workers and clients reach this coordinator by (default: the --bind host).
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// Seconds without a poll before a worker is taken for lost and its tasks run elsewhere
    /// (busy workers poll every 5 s).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(6..))]
    pub worker_timeout: u64,
    /// Shards of one run computed at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub shards_in_flight: u64,
    /// Tries per shard before a run fails.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_attempts: u32,
    /// Corpus rows per shard when a run does not say (whole row groups).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_rows: u64,
    #[command(flatten, next_help_heading = "Mutual TLS")]
    pub tls: TlsArgs,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The coordinator, http://HOST:PORT (https:// with --tls-*).
    #[arg(long, value_name = "URL")]
    pub coordinator: String,
    /// The file holding the cluster's token (default: $LIDSCOPE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Address for this worker's Arrow Flight port (results and shuffle data; authenticated only
    /// with --tls-*).
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub bind: String,
    /// The host the coordinator reaches this worker by (default: --bind).
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// The Arrow Flight port (0: a free port).
    #[arg(long, default_value_t = 0)]
    pub flight_port: u16,
    /// Where task results wait to be fetched (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Tasks at a time (each lid() call already uses every core).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: u64,
    /// Worker threads for lid() (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
    #[command(flatten, next_help_heading = "Mutual TLS")]
    pub tls: TlsArgs,
}

/// Output format of `lidscope sql`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum FormatArg {
    /// An aligned table for people.
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON lines: one object per row.
    Json,
    /// Parquet (needs --output).
    Parquet,
}

#[derive(Args, Debug, Clone)]
pub struct SqlArgs {
    /// A table: NAME=PATH, PATH a result directory, a corpus (file, directory or glob) or a reference file.
    ///
    /// A result directory registers NAME over its data/ (hive partitions become columns),
    /// NAME_runs with one row per run manifest, the view NAME_summary (per run: n, n_finite,
    /// mean, std, median, p10, p90 of lid) and, when a token column exists, NAME_tokens (the same
    /// per run and token).
    #[arg(long = "table", value_parser = parse_key_value, value_name = "NAME=PATH")]
    pub tables: Vec<(String, String)>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write the result to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The SQL query.
    pub query: String,
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// A result directory (as `lidscope run` writes it, partitioned or not).
    #[arg(value_name = "DIR")]
    pub results: PathBuf,
    /// The SVG file to write.
    #[arg(long, default_value = "lid.svg", value_name = "FILE")]
    pub out: PathBuf,
    /// Histogram bins over the range of all runs' LIDs.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bins: u32,
    /// Draw this estimator's values (a name of `run --estimator`, e.g. mle) from results whose
    /// runs computed several, instead of each run's first estimator (`lid`).
    #[arg(long, value_name = "NAME")]
    pub estimator: Option<String>,
}

/// `report --x-scale`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XScaleArg {
    /// Logarithmic when the checkpoints are spaced geometrically, else linear.
    Auto,
    /// By value.
    Linear,
    /// By the logarithm (a step 0 sits before the first positive step).
    Log,
}

fn parse_open_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1 (e.g. 0.2 for 20%)")),
    }
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// A result directory (as `lidscope run` writes it, partitioned or not).
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,
    /// The directory to write summary.csv, summary.parquet, the SVG figures and index.html into
    /// (created if missing; the report's own files in it are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The partition key on the trend chart's x axis (its values must be numbers).
    ///
    /// Default: step, else checkpoint, else epoch, else the first partition key whose values are
    /// all numbers.
    #[arg(long, value_name = "KEY")]
    pub x: Option<String>,
    /// Training metrics to set beside mean LID: a CSV (header line) or Parquet file with one row
    /// per checkpoint, a column named like the x key (e.g. step), optionally other partition keys
    /// (e.g. model), then numeric metric columns (loss, accuracy, ...).
    ///
    /// The summary gets the metric columns, the page a panel per metric on the same axis, and
    /// correlations.csv the Spearman, Pearson and lagged Spearman correlations of mean LID with
    /// each metric per trend line. Rows that are no run's checkpoint are reported.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// With --metrics: list in falls.csv the intervals between checkpoints where mean LID fell by
    /// more than this fraction of its value (0.2: 20%), with what each metric did over the fall
    /// and over the next interval.
    #[arg(long, default_value_t = 0.2, value_parser = parse_open_fraction, value_name = "F")]
    pub fall_threshold: f64,
    /// Compare two runs on the same tokens, e.g. step=3600:4900 or model=base:tuned: per
    /// combination of the other partition keys, the paired differences (A - B) over the identities
    /// both measured: n, mean, standard deviation, Cohen's d_z, paired t and its p (compare.csv).
    #[arg(long, value_name = "KEY=A:B")]
    pub compare: Option<lidscope_report::Comparison>,
    /// The trend's x axis: log when the checkpoints are spaced geometrically (auto), or as asked.
    #[arg(long, value_enum, default_value_t = XScaleArg::Auto)]
    pub x_scale: XScaleArg,
    /// Histogram bins over the range of all runs' LIDs.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bins: u32,
    /// Draw this estimator's values (a name of `run --estimator`, e.g. mle) from results whose
    /// runs computed several, instead of each run's first estimator (`lid`).
    #[arg(long, value_name = "NAME")]
    pub estimator: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where to write the generated corpus and the results (an earlier demo there is replaced).
    #[arg(long, default_value = "lidscope-demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Tokens in the generated corpus.
    #[arg(long, default_value_t = 6000)]
    pub rows: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Corpus rows (the corpus is its own reference).
    #[arg(long, default_value_t = 60_000)]
    pub rows: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 768)]
    pub dim: usize,
    /// Neighbourhood size.
    #[arg(long, default_value_t = 128)]
    pub k: usize,
    /// Dimension of the manifold the vectors lie near.
    #[arg(long, default_value_t = 10)]
    pub manifold_dim: usize,
    /// Seed of the synthetic corpus.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The second setting: corpus rows measured against a reference file of other rows (0: skip).
    #[arg(long, default_value_t = 120_000)]
    pub corpus_rows: usize,
    /// The second setting's embedding dimension.
    #[arg(long, default_value_t = 384)]
    pub corpus_dim: usize,
    /// The second setting's reference rows.
    #[arg(long, default_value_t = 20_000, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..), |v| v as usize))]
    pub reference_rows: usize,
    /// Also measure the k-d tree against the GEMM path for d = 2..64 and report the crossover.
    #[arg(long)]
    pub kdtree: bool,
    /// Skip the end-to-end run (with --kdtree: only the crossover table).
    #[arg(long)]
    pub no_run: bool,
    /// Another lidscope executable (e.g. the previous release) to time against this one: both
    /// run the same corpus as separate processes, alternately, and the report gives the ratio
    #[arg(long, value_name = "BIN")]
    pub against: Option<PathBuf>,
    /// Runs of each executable with --against (in the order A B B A A B ...)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Also time real hidden states: this corpus (Parquet file, directory, glob or s3:// URL, e.g.
    /// the output of `lidscope embed`) as its own sample, and against a sample of
    /// --real-reference of its rows.
    #[arg(long, value_name = "CORPUS", conflicts_with_all = ["against", "cluster"])]
    pub real: Option<String>,
    /// With --real: the embedding column (`lidscope embed` names layer i `hidden_L<i>`).
    #[arg(long, value_name = "NAME", default_value = "hidden_L6", requires = "real")]
    pub real_column: String,
    /// With --real: the identity columns.
    #[arg(long, value_name = "A,B", default_value = "seq_id,position", value_delimiter = ',', requires = "real")]
    pub real_id_columns: Vec<String>,
    /// With --real: rows of the sample in the second real setting (0: skip it).
    #[arg(long, value_name = "N", default_value_t = 4000, requires = "real")]
    pub real_reference: usize,
    /// With --real: skip the synthetic settings.
    #[arg(long, requires = "real")]
    pub no_synthetic: bool,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Time a local run against a loopback cluster (a coordinator and two workers started here),
    /// and the cluster's recovery from a worker killed mid-run.
    #[arg(long, conflicts_with_all = ["against", "kdtree"])]
    pub cluster: bool,
    /// With --cluster: reference rows sampled from the corpus (default 4,000).
    #[arg(long, requires = "cluster")]
    pub reference_size: Option<usize>,
    /// With --cluster: also run the plaintext cluster with its corpus and results under this
    /// prefix of an S3-compatible store (credentials and endpoint from the AWS_* environment;
    /// the bench's objects are deleted afterwards).
    #[arg(long, value_name = "s3://BUCKET/PREFIX", requires = "cluster")]
    pub s3: Option<String>,
    /// Instead: what each local estimator costs per query beside the neighbour search, on the
    /// paper's setting (--rows x --dim as its own reference, --k), and all of them in one pass.
    #[arg(long, conflicts_with_all = ["against", "kdtree", "cluster"])]
    pub estimators: bool,
    /// Instead: tokens per second of `lidscope embed` with this checkpoint, beside the sgemm rate
    /// (256 synthetic texts of 128 tokens, or --embed-texts; passes as `embed` makes them, the
    /// last layer).
    #[arg(long, value_name = "MODEL_DIR", conflicts_with_all = ["against", "kdtree", "cluster"])]
    pub embed: Option<PathBuf>,
    /// With --embed: tokens per forward pass, at most (as `lidscope embed --batch-tokens`).
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..), requires = "embed")]
    pub batch_tokens: u32,
    /// With --embed: real texts instead of the synthetic ones (Parquet: a file, directory, glob
    /// or s3:// URL), truncated at --max-length tokens.
    #[arg(long, value_name = "TEXTS", requires = "embed")]
    pub embed_texts: Option<String>,
    /// With --embed-texts: the column of texts.
    #[arg(long, value_name = "NAME", default_value = "text", requires = "embed_texts")]
    pub text_column: String,
    /// With --embed: tokens per text at most (default: 128 for the synthetic texts, as `lidscope
    /// embed` truncates for real ones: min(512, the checkpoint's positions)).
    #[arg(long, value_name = "N", requires = "embed")]
    pub max_length: Option<usize>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside [0, 1)"))
    }
}

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// The sweep spec (TOML).
    #[arg(value_name = "SPEC.toml")]
    pub spec: PathBuf,
    /// List the runs and what each needs (new, changed, done, waiting), run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep running: look for new or changed corpora every --interval seconds.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: seconds between looks.
    #[arg(long, default_value_t = 60, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Run on the cluster whose coordinator is at this URL (http://HOST:PORT, or https:// with
    /// --tls-*).
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// With --cluster: the file holding the cluster's token (default: $LIDSCOPE_TOKEN).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub token_file: Option<PathBuf>,
    /// With --cluster: runs submitted at the same time.
    #[arg(long, default_value_t = 4, requires = "cluster", value_parser = clap::value_parser!(u64).range(1..))]
    pub runs_in_flight: u64,
    // With --cluster https://...: this client's certificate and the cluster's CA.
    #[command(flatten, next_help_heading = "Mutual TLS")]
    pub tls: TlsArgs,
    /// One JSON object per line on stdout (runs, rounds, the summary) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Worker threads of local runs (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
}
