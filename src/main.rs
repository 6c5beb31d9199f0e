//! The `cidgate` command: a thin shell over the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cid::Cid;
use clap::{Parser, Subcommand};

use cidgate::admin_client::AdminClient;
use cidgate::app::ConfigSource;
use cidgate::config::{Config, Overrides};
use cidgate::content::{resolve, selector};
use cidgate::ipld::builder::{add_paths, BlockSink, BuildError};
use cidgate::ipld::Block;
use cidgate::tiers::import::{finish_batch, import_car, ImportReport};
use cidgate::tiers::local::{LocalStore, PinReason, StoreError};

/// cidgate: a caching, verifying HTTP gateway for IPFS content.
///
/// Exit codes: 0 success, 1 failure (bad input, verification failure, I/O), 2 usage error.
#[derive(Parser)]
#[command(name = "cidgate", version, about, long_about)]
struct Cli {
    /// TOML configuration file (see config/default.toml); CIDGATE_<SECTION>__<KEY> variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory of the embedded store (overrides store.dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (public listener plus the admin listener).
    #[command(args_override_self = true)]
    Serve {
        /// Public listen address (overrides server.listen), e.g. 127.0.0.1:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Admin listen address (overrides admin.listen).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
    },
    /// Print the effective configuration (defaults, file, CIDGATE_* environment, flags) as
    /// TOML, with secrets masked (admin.token, tokens and passwords, credentials in URLs).
    #[command(args_override_self = true)]
    Config {
        /// As `serve --listen`: show the configuration `serve` would run with.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// As `serve --admin-listen`.
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
    },
    /// Import CARv1 files (or - for stdin) into the store, verifying every block; pins complete roots.
    ///
    /// A CAR whose DAG is incomplete imports the blocks it has and leaves its root unpinned (exit 0).
    /// A block that does not match its CID, or a malformed CAR, imports nothing from that file (exit 1).
    /// When a running `serve` holds the data directory, the CAR goes through its admin listener.
    /// Files named `{name}.ipns-record` (or `{name}_{note}.ipns-record`) are signed IPNS records:
    /// each is verified against its name and stored, and `/ipns/{name}` resolves through it.
    Import {
        /// CAR files or IPNS records; `-` reads a CAR from standard input.
        #[arg(required = true, value_name = "FILE.car|FILE.ipns-record|-")]
        files: Vec<String>,
    },
    /// Chunk files and directories into a UnixFS DAG (CIDv1, raw leaves, 1 MiB chunks) and pin it.
    ///
    /// Gives the same root CID as `ipfs-car pack` (with --no-wrap for a single file).
    Add {
        /// Files or directories; several are wrapped in one directory.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Include hidden files (names starting with a dot).
        #[arg(long)]
        hidden: bool,
    },
    /// Pins in the hot layer, through the running server's admin API.
    Pin {
        #[command(subcommand)]
        action: PinAction,
        /// Admin listener URL (default: the one the data directory's running server announced).
        #[arg(long, global = true, value_name = "URL")]
        admin: Option<String>,
    },
    /// Read DAGs into the running server's edge cache (progress shown while it works).
    Prewarm {
        /// Root CIDs.
        #[arg(required = true, value_name = "CID")]
        cids: Vec<String>,
        /// Admin listener URL (default: the one the data directory's running server announced).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
    /// Write a CARv1 of a stored DAG.
    Export {
        /// Root CID, optionally followed by a path (CID/a/b).
        cid: String,
        /// Output file (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PinAction {
    /// List pins: CID, who pinned it (operator, auto, sample), where.
    Ls,
    /// Pin a DAG into the hot layer as an operator pin (fetched from wherever it is, verified).
    Add {
        /// Root CID.
        cid: String,
        /// A name for the pin.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a pin.
    Rm {
        /// Root CID.
        cid: String,
    },
}

/// mimalloc returns freed memory to the OS promptly and keeps no per-thread arenas of the kind
/// that make glibc's resident size grow with the number of blocking threads (measured with
/// loadtest/memory.sh; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        listen: match &cli.command {
            Command::Serve { listen, .. } | Command::Config { listen, .. } => *listen,
            _ => None,
        },
        admin_listen: match &cli.command {
            Command::Serve { admin_listen, .. } | Command::Config { admin_listen, .. } => {
                *admin_listen
            }
            _ => None,
        },
    };
    let config = match Config::effective(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cidgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config { .. } = cli.command {
        // Printed before logging is set up: the output is the configuration alone.
        return match config.to_masked_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cidgate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cidgate: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Outside the runtime: the OTLP exporter's blocking HTTP client runs on its own thread.
    let telemetry = match cidgate::telemetry::init(&config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cidgate: {e}");
            return if e.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let source = ConfigSource {
        file: cli.config.clone(),
        overrides,
        log: Some(telemetry.log.clone()),
    };
    let result = runtime.block_on(run(cli.command, config, source));
    if let Err(e) = telemetry.shutdown() {
        eprintln!("cidgate: {e}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cidgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config, source: ConfigSource) -> anyhow::Result<()> {
    match command {
        // The flags are already in `config` (see `Overrides`).
        Command::Serve { .. } => cidgate::app::serve(config, source).await,
        Command::Config { .. } => Ok(()),
        Command::Import { files } => import(&config, &files).await,
        Command::Add { paths, hidden } => add(&config, &paths, hidden).await,
        Command::Export { cid, output } => export(&config, &cid, output.as_deref()).await,
        Command::Pin { action, admin } => {
            let client = AdminClient::new(&config, admin.as_deref())?;
            match action {
                PinAction::Ls => client.pin_ls().await,
                PinAction::Add { cid, name } => {
                    Cid::try_from(cid.as_str()).with_context(|| format!("invalid CID {cid:?}"))?;
                    client.pin_add(&cid, name.as_deref()).await
                }
                PinAction::Rm { cid } => {
                    Cid::try_from(cid.as_str()).with_context(|| format!("invalid CID {cid:?}"))?;
                    client.pin_rm(&cid).await
                }
            }
        }
        Command::Prewarm { cids, admin } => {
            for c in &cids {
                Cid::try_from(c.as_str()).with_context(|| format!("invalid CID {c:?}"))?;
            }
            AdminClient::new(&config, admin.as_deref())?
                .prewarm(&cids)
                .await
        }
    }
}

fn print_report(name: &str, report: &ImportReport, elapsed: Duration) {
    let mbps = report.bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-6);
    println!(
        "{name}: {} blocks ({} new), {} bytes, {mbps:.1} MB/s",
        report.blocks, report.new_blocks, report.bytes
    );
    for r in &report.roots {
        if r.complete {
            println!("  root {} complete, pinned", r.cid);
        } else {
            println!(
                "  root {} INCOMPLETE ({}), not pinned",
                r.cid,
                r.reason.as_deref().unwrap_or("a block is missing")
            );
        }
    }
}

async fn import(config: &Config, files: &[String]) -> anyhow::Result<()> {
    let store = match config.store.open() {
        Ok(s) => Some(s),
        Err(StoreError::Locked(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut failed = 0;
    for name in files {
        if name.ends_with(".ipns-record") {
            if let Err(e) = import_record(config, store.as_ref(), name).await {
                eprintln!("cidgate: {name}: {e:#}; not imported");
                failed += 1;
            }
            continue;
        }
        let start = Instant::now();
        let result = match &store {
            Some(store) => import_local(store, name).await,
            None => import_remote(config, name).await,
        };
        match result {
            Ok(report) => print_report(name, &report, start.elapsed()),
            Err(e) => {
                eprintln!("cidgate: {name}: {e:#}; nothing from it was imported");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files failed", files.len());
    }
    Ok(())
}

/// Stores a signed IPNS record, named by its file (`{name}.ipns-record` or
/// `{name}_{note}.ipns-record`), after verifying it against that name.
async fn import_record(
    config: &Config,
    store: Option<&LocalStore>,
    file: &str,
) -> anyhow::Result<()> {
    let name = cidgate::ipns::name_from_file_name(file).with_context(|| {
        "the file name must start with the IPNS name: {name}.ipns-record or {name}_{note}.ipns-record"
    })?;
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {file}"))?;
    let value = match store {
        Some(store) => {
            let names = cidgate::ipns::NameResolver::new(store.clone(), Default::default());
            names.put_record(&name, &bytes)?.value
        }
        None => {
            let req = reqwest::Client::new()
                .put(format!(
                    "{}/routing/v1/ipns/{}",
                    running_admin(config)?,
                    name.to_cid_string()
                ))
                .header("content-type", "application/vnd.ipfs.ipns-record")
                .body(bytes);
            let text = send_to_admin(config, req, "the record").await?;
            let v: serde_json::Value =
                serde_json::from_str(&text).context("reading the server's answer")?;
            v["value"].as_str().unwrap_or_default().to_string()
        }
    };
    println!("/ipns/{} -> {value}", name.to_cid_string());
    Ok(())
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    last_log: Instant,
}

impl Progress {
    fn new(name: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            start: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, blocks: u64, bytes: u64) {
        let mbps = bytes as f64 / 1e6 / self.start.elapsed().as_secs_f64().max(1e-6);
        let msg = format!("{blocks} blocks, {} MB, {mbps:.1} MB/s", bytes / 1_000_000);
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None => {
                if self.last_log.elapsed() >= Duration::from_secs(2) {
                    tracing::info!("import: {msg}");
                    self.last_log = Instant::now();
                }
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn import_local(store: &LocalStore, name: &str) -> anyhow::Result<ImportReport> {
    let mut progress = Progress::new(name);
    let result = if name == "-" {
        import_car(store, tokio::io::stdin(), PinReason::Operator, |b, n| {
            progress.update(b, n)
        })
        .await
    } else {
        let file = tokio::fs::File::open(name)
            .await
            .with_context(|| format!("opening {name}"))?;
        import_car(store, file, PinReason::Operator, |b, n| {
            progress.update(b, n)
        })
        .await
    };
    progress.finish();
    Ok(result?)
}

/// The admin URL of the running server that holds the store.
fn running_admin(config: &Config) -> anyhow::Result<String> {
    match cidgate::app::running_admin_url(&config.store.dir) {
        Some(url) => Ok(url),
        None => bail!(
            "the store at {} is in use and no running server announced its admin address",
            config.store.dir.display()
        ),
    }
}

/// Sends `req` to the running server's admin listener with the configured token; the body of
/// a successful answer.
async fn send_to_admin(
    config: &Config,
    mut req: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<String> {
    if !config.admin.token.is_empty() {
        req = req.bearer_auth(&config.admin.token);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("sending {what} to the running server"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("server refused {what} ({status}): {}", text.trim());
    }
    Ok(text)
}

async fn import_remote(config: &Config, name: &str) -> anyhow::Result<ImportReport> {
    let url = running_admin(config)?;
    tracing::info!("store in use by a running server; importing through {url}");
    let body = if name == "-" {
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
    } else {
        let file = tokio::fs::File::open(name)
            .await
            .with_context(|| format!("opening {name}"))?;
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
    };
    let req = reqwest::Client::new()
        .post(format!("{url}/admin/import"))
        .body(body);
    let text = send_to_admin(config, req, "the CAR").await?;
    serde_json::from_str(&text).context("reading the server's import report")
}

struct StoreSink {
    pending: Vec<Block>,
    pending_bytes: usize,
    store: LocalStore,
    batch: u64,
}

impl BlockSink for StoreSink {
    fn put(&mut self, block: Block) -> Result<(), BuildError> {
        self.pending_bytes += block.len();
        self.pending.push(block);
        if self.pending_bytes >= 16 * 1024 * 1024 {
            self.flush()?;
        }
        Ok(())
    }
}

impl StoreSink {
    fn flush(&mut self) -> Result<(), BuildError> {
        let blocks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.store
            .put_staged(self.batch, &blocks, false)
            .map(|_| ())
            .map_err(|e| BuildError::Sink(e.to_string()))
    }
}

async fn add(config: &Config, paths: &[PathBuf], hidden: bool) -> anyhow::Result<()> {
    let store = config.store.open().map_err(|e| match e {
        StoreError::Locked(_) => {
            anyhow::anyhow!("{e}; stop it or use `ipfs-car pack` + `cidgate import`")
        }
        other => other.into(),
    })?;
    let _guard = store.writer_lock().await;
    let batch = store.new_batch()?;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut sink = StoreSink {
        pending: Vec::new(),
        pending_bytes: 0,
        store: store.clone(),
        batch,
    };
    let built = add_paths(&refs, hidden, &mut sink).and_then(|root| sink.flush().map(|_| root));
    match built {
        Ok(root) => {
            // The builder made every block itself, but the pin is checked like any import's.
            let report = finish_batch(&store, batch, &[root.cid], PinReason::Operator)?;
            if let Some(reason) = report.first().and_then(|r| r.reason.as_deref()) {
                bail!(
                    "the DAG built for {} is incomplete ({reason}); not pinned",
                    root.cid
                );
            }
            println!("{}", root.cid);
            Ok(())
        }
        Err(e) => {
            store.rollback_batch(batch)?;
            Err(e.into())
        }
    }
}

async fn export(config: &Config, target: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let store = config.store.open().map_err(|e| match e {
        StoreError::Locked(_) => {
            anyhow::anyhow!("{e}; fetch /ipfs/{target}?format=car from it instead")
        }
        other => other.into(),
    })?;
    let target = target.trim_start_matches("/ipfs/");
    let mut parts = target.split('/').filter(|s| !s.is_empty());
    let root: Cid = parts.next().unwrap_or("").parse().context("invalid CID")?;
    let segments: Vec<String> = parts.map(str::to_string).collect();
    let resolved = resolve(&store, root, &segments).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Block>(64);
    let walk_store = store.clone();
    let walker = tokio::spawn(async move {
        let mut tx = tx;
        selector::walk(
            &walk_store,
            &resolved,
            &selector::Selection::default(),
            &mut tx,
        )
        .await
    });
    let out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match output {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut writer = iroh_car::CarWriter::new(
        iroh_car::CarHeader::new_v1(vec![root]),
        tokio::io::BufWriter::new(out),
    );
    writer.write_header().await?;
    let mut blocks = 0u64;
    while let Some(block) = rx.recv().await {
        let (cid, data) = block.into_parts();
        writer.write(cid, &data).await?;
        blocks += 1;
    }
    walker.await.context("export task failed")??;
    let mut inner = writer.finish().await?;
    tokio::io::AsyncWriteExt::flush(&mut inner).await?;
    tracing::info!(blocks, "exported");
    Ok(())
}
