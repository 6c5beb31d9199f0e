//! The `cidgate` command: a thin shell over the library. It parses arguments, opens the store
//! when no running server holds it (or talks to that server's admin listener when one does),
//! and prints; the work is done by `tiers::import`, `content::dag`, `admin_client` and `cli`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context};
use bytes::Bytes;
use cid::Cid;
use clap::{Parser, Subcommand};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use cidgate::admin_client::AdminClient;
use cidgate::app::ConfigSource;
use cidgate::cli::{self, size, Progress};
use cidgate::config::{Config, Overrides};
use cidgate::content::{dag, resolve};
use cidgate::ipld::builder::{input_size, BuildError};
use cidgate::tiers::import::{add_car_stream, add_paths, import_car_except, ImportReport, Roots};
use cidgate::tiers::local::{LocalStore, PinReason, StoreError};

/// cidgate: a caching, verifying HTTP gateway for IPFS content.
///
/// import, add and export work on the data directory's store, or through the admin listener of
/// the `cidgate serve` that holds it (found in the directory's admin.addr file, or --admin URL);
/// pin and prewarm always go through a running server. Progress bars (percentage, ETA) are
/// drawn when stderr is a terminal; otherwise each transfer prints one summary line.
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
    /// Bearer token for the admin listener (overrides admin.token; the listener answers 401
    /// without the right one when a token is configured).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "CIDGATE_ADMIN__TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Admin listener URL of the running server to use (default: the one the data directory's
    /// running server announced in its admin.addr file).
    #[arg(long, global = true, value_name = "URL")]
    admin: Option<String>,
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
    /// Gives the same root CID as `ipfs-car pack` (with --no-wrap for a single file), printed on
    /// standard output. When a running `serve` holds the data directory, the DAG is streamed to
    /// its admin listener as it is built (verified there, all or nothing).
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
    },
    /// Read DAGs into the running server's edge cache (progress shown while it works).
    ///
    /// Says how much of each DAG stayed in the edge cache: a DAG larger than cache.memory is
    /// read, but only part of it can stay warm.
    Prewarm {
        /// Root CIDs.
        #[arg(required = true, value_name = "CID")]
        cids: Vec<String>,
    },
    /// Check that a root can be retrieved, now: the store's blocks re-read and hashed, the hot
    /// layer asked, every storage provider sampled (verified); repairs what it can.
    ///
    /// Goes through the running server when one holds the data directory. Exits 0 when the
    /// root is retrievable from at least one place, 1 when it is not.
    Check {
        /// Root CID (pinned or not).
        cid: String,
    },
    /// What the store holds: pinned and cache bytes, the budget, evictions, collections
    /// (through the running server when one holds the store).
    Store {
        #[command(subcommand)]
        action: Option<StoreAction>,
    },
    /// Write a CARv1 of a stored DAG (through the running server when one holds the store).
    Export {
        /// Root CID, optionally followed by a path (CID/a/b).
        cid: String,
        /// Output file (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Run garbage collection, eviction and compaction now, then print the summary.
    Maintain,
}

#[derive(Subcommand)]
enum PinAction {
    /// List pins: CID, name, who pinned it (operator, auto, sample), size, when, where.
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
    let mut config = match Config::effective(cli.config.as_deref(), std::env::vars(), &overrides) {
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
    if let Some(token) = &cli.token {
        config.admin.token = token.clone();
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
    let result = runtime.block_on(run(cli.command, config, cli.admin, source));
    if let Err(e) = telemetry.shutdown() {
        eprintln!("cidgate: {e}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cidgate: {}", cli::error_report(e.chain()));
            ExitCode::FAILURE
        }
    }
}

async fn run(
    command: Command,
    config: Config,
    admin: Option<String>,
    source: ConfigSource,
) -> anyhow::Result<()> {
    match command {
        // The flags are already in `config` (see `Overrides`).
        Command::Serve { .. } => cidgate::app::serve(config, source).await,
        Command::Config { .. } => Ok(()),
        Command::Import { files } => import(&config, admin.as_deref(), &files).await,
        Command::Add { paths, hidden } => add(&config, admin.as_deref(), paths, hidden).await,
        Command::Export { cid, output } => {
            export(&config, admin.as_deref(), &cid, output.as_deref()).await
        }
        Command::Pin { action } => {
            let client = AdminClient::new(&config, admin.as_deref())?;
            match action {
                PinAction::Ls => print!("{}", cli::pin_table(&client.pins().await?)),
                PinAction::Add { cid, name } => {
                    check_cid(&cid)?;
                    let target = client.pin_add(&cid, name.as_deref()).await?;
                    println!("pinned {cid} in {target}");
                }
                PinAction::Rm { cid } => {
                    check_cid(&cid)?;
                    if client.pin_rm(&cid).await? {
                        println!("unpinned {cid}");
                    } else {
                        println!("{cid} was not pinned");
                    }
                }
            }
            Ok(())
        }
        Command::Check { cid } => {
            let root: Cid = cid
                .parse()
                .with_context(|| format!("invalid CID {cid:?}"))?;
            let record = match target(&config, admin.as_deref())? {
                Target::Server(client) => client.check(&cid).await?,
                Target::Store(store) => check_here(&config, store, root).await?,
            };
            print!("{}", cli::check_report(&record));
            if !record.state.retrievable() {
                anyhow::bail!("{cid} is not retrievable from any place");
            }
            Ok(())
        }
        Command::Store { action } => {
            let target = target(&config, admin.as_deref())?;
            if let Some(StoreAction::Maintain) = action {
                let report = match &target {
                    Target::Server(client) => client.store_maintain().await?,
                    Target::Store(store) => {
                        let s = store.clone();
                        tokio::task::spawn_blocking(move || s.maintain()).await??
                    }
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            let summary = match &target {
                Target::Server(client) => client.store_summary().await?,
                Target::Store(store) => store.summary(),
            };
            print!("{summary}");
            Ok(())
        }
        Command::Prewarm { cids } => {
            for c in &cids {
                check_cid(c)?;
            }
            prewarm(&AdminClient::new(&config, admin.as_deref())?, &cids).await
        }
    }
}

fn check_cid(cid: &str) -> anyhow::Result<()> {
    Cid::try_from(cid).with_context(|| format!("invalid CID {cid:?}"))?;
    Ok(())
}

/// Where a command's blocks go or come from: the store, opened here, or the running server
/// that holds it.
/// `cidgate check` without a running server: the tiers the configuration names, built here.
async fn check_here(
    config: &Config,
    store: LocalStore,
    root: Cid,
) -> anyhow::Result<cidgate::retrievability::RootRecord> {
    use cidgate::config::HotBackend;
    let metrics = cidgate::telemetry::Metrics::new();
    let cold = cidgate::app::cold_tier(config, &store, &metrics)?;
    let source = cidgate::app::tiered_source(
        config,
        store.clone(),
        metrics.clone(),
        cold.clone(),
        cidgate::denylist::DenylistHandle::default(),
    )?;
    // Pins are asked of a Kubo node or a Cluster; a trustless hot node takes none (it is asked
    // for a sampled block only), and the embedded store is checked as the store.
    let remote = config.hot.backend == HotBackend::Kubo || !config.hot.cluster_url.is_empty();
    let hot_pins = remote
        .then(|| cidgate::app::hot_pins(config, &store))
        .transpose()?;
    // The promoter's records, read from the store as the server would: a pin this gateway made
    // in the hot layer and lost there is pushed again by this check too. Nothing is scheduled.
    let promoter = hot_pins
        .as_ref()
        .map(|pins| {
            cidgate::popularity::promoter::Promoter::new(
                pins.clone(),
                source.clone(),
                store.clone(),
                config.popularity.max_dag_bytes.as_u64(),
                Arc::new(cidgate::popularity::tracker::SystemClock),
                metrics.clone(),
                Some(config.popularity.gateway_name.clone()),
            )
        })
        .transpose()?;
    let checker = cidgate::retrievability::Checker::new(
        cidgate::retrievability::Places {
            store: store.clone(),
            source: source.clone(),
            upstreams: source.upstreams(),
            hot_node: source.hot_node(),
            hot_pins,
            promoter,
            cold,
        },
        config.retrieval_checks.clone(),
        metrics,
    )?;
    Ok(checker.check(root).await?)
}

enum Target {
    Store(LocalStore),
    Server(AdminClient),
}

/// The store when no server holds it; otherwise (or with `--admin`) the server's admin client.
fn target(config: &Config, admin: Option<&str>) -> anyhow::Result<Target> {
    if admin.is_some() {
        return Ok(Target::Server(AdminClient::new(config, admin)?));
    }
    match cidgate::tiers::local::LocalStore::from_config(&config.store) {
        Ok(s) => Ok(Target::Store(s)),
        Err(StoreError::Locked(_)) => {
            let client = AdminClient::new(config, None).with_context(|| {
                format!(
                    "the store at {} is held by another process",
                    config.store.dir.display()
                )
            })?;
            tracing::debug!(
                url = client.url(),
                "the store is held by a running server; going through its admin listener"
            );
            Ok(Target::Server(client))
        }
        Err(e) => Err(e.into()),
    }
}

/// Counts the bytes read through it into a progress bar.
struct Counted<R> {
    inner: R,
    progress: Progress,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.progress.add(read as u64);
        poll
    }
}

/// Standard input or a file, counted into `progress`.
async fn open_input(
    name: &str,
    progress: &Progress,
) -> anyhow::Result<Counted<Box<dyn AsyncRead + Unpin + Send>>> {
    let inner: Box<dyn AsyncRead + Unpin + Send> = if name == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(name)
                .await
                // The caller's messages start with the file's name already.
                .context("opening it")?,
        )
    };
    Ok(Counted {
        inner,
        progress: progress.clone(),
    })
}

fn print_report(name: &str, report: &ImportReport, progress: &Progress) {
    println!(
        "{name}: {} blocks ({} new), {} in {:.1} s ({})",
        report.blocks,
        report.new_blocks,
        size(report.bytes),
        progress.elapsed().as_secs_f64(),
        cli::rate(progress.done(), progress.elapsed())
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

async fn import(config: &Config, admin: Option<&str>, files: &[String]) -> anyhow::Result<()> {
    let target = target(config, admin)?;
    // Through a server, its own denylists apply; into the store directly, the configured ones.
    let denylist = match &target {
        Target::Store(_) => offline_denylist(config).await?,
        Target::Server(_) => std::sync::Arc::new(cidgate::denylist::Denylist::empty()),
    };
    let mut failed = 0;
    for name in files {
        if name.ends_with(".ipns-record") {
            if let Err(e) = import_record(&target, name).await {
                eprintln!(
                    "cidgate: {name}: {}; not imported",
                    cli::error_report(e.chain())
                );
                failed += 1;
            }
            continue;
        }
        let total = if name == "-" {
            None
        } else {
            tokio::fs::metadata(name).await.ok().map(|m| m.len())
        };
        let progress = Progress::new(name, total);
        let result = import_one(&target, name, &progress, &denylist).await;
        progress.clear();
        match result {
            Ok(report) => print_report(name, &report, &progress),
            Err(e) => {
                eprintln!(
                    "cidgate: {name}: {}; nothing from it was imported",
                    cli::error_report(e.chain())
                );
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files failed", files.len());
    }
    Ok(())
}

async fn import_one(
    target: &Target,
    name: &str,
    progress: &Progress,
    denylist: &cidgate::denylist::Denylist,
) -> anyhow::Result<ImportReport> {
    let input = open_input(name, progress).await?;
    Ok(match target {
        Target::Store(store) => {
            import_car_except(
                store,
                input,
                PinReason::Operator,
                Roots::Header,
                denylist,
                |_, _| {},
            )
            .await?
        }
        Target::Server(client) => {
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(input));
            client.import_car(body, false).await?
        }
    })
}

/// The configured denylists (local files, and subscriptions fetched or read from their stored
/// copies) for an import straight into the store, so that blocked blocks are left out as a
/// server would leave them out.
async fn offline_denylist(
    config: &Config,
) -> anyhow::Result<std::sync::Arc<cidgate::denylist::Denylist>> {
    if config.denylist.files.is_empty() && config.denylist.urls.is_empty() {
        return Ok(std::sync::Arc::new(cidgate::denylist::Denylist::empty()));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (service, task) = cidgate::denylist::DenylistService::start(
        &config.denylist,
        &config.store.dir,
        stop.clone(),
    )
    .await
    .context("loading the denylists")?;
    let list = service.handle().current();
    stop.cancel();
    let _ = task.await;
    Ok(list)
}

/// Stores a signed IPNS record, named by its file (`{name}.ipns-record` or
/// `{name}_{note}.ipns-record`), after verifying it against that name.
async fn import_record(target: &Target, file: &str) -> anyhow::Result<()> {
    let name = cidgate::ipns::name_from_file_name(file).with_context(|| {
        "the file name must start with the IPNS name: {name}.ipns-record or {name}_{note}.ipns-record"
    })?;
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {file}"))?;
    let value = match target {
        Target::Store(store) => {
            let names = cidgate::ipns::NameResolver::new(
                cidgate::tiers::records::Records::of(store),
                Default::default(),
            );
            names.put_record(&name, &bytes)?.value
        }
        Target::Server(client) => client.put_ipns_record(&name.to_cid_string(), bytes).await?,
    };
    println!("/ipns/{} -> {value}", name.to_cid_string());
    Ok(())
}

async fn add(
    config: &Config,
    admin: Option<&str>,
    paths: Vec<PathBuf>,
    hidden: bool,
) -> anyhow::Result<()> {
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let total = input_size(&refs, hidden)?;
    let target = target(config, admin)?;
    let progress = Progress::new("add", Some(total));
    let p = progress.clone();
    let on_content = move |n| p.set(n);
    let (root, blocks, new_blocks) = match &target {
        Target::Store(store) => {
            let report = add_paths(store, paths, hidden, on_content);
            let report = match report.await {
                Ok(r) => r,
                Err(e) => {
                    progress.clear();
                    return Err(e.into());
                }
            };
            (report.root, report.blocks, report.new_blocks)
        }
        Target::Server(client) => {
            if let Err(e) = client.check_token().await {
                progress.clear();
                return Err(e.into());
            }
            let (stream, build) = add_car_stream(paths, hidden, on_content);
            let sent = client
                .import_car(reqwest::Body::wrap_stream(stream), true)
                .await;
            let built = build.await.context("the build task failed")?;
            progress.clear();
            // The first failure is the cause: a build that failed cut the stream short, a
            // server that refused the stream made the build stop.
            let root = match (built, sent) {
                (Err(e @ BuildError::Io { .. } | e @ BuildError::Unsupported(_)), _) => {
                    return Err(e.into())
                }
                (_, Err(e)) => return Err(e.into()),
                (Err(e), Ok(_)) => return Err(e.into()),
                (Ok(root), Ok(report)) => {
                    let r = report
                        .roots
                        .first()
                        .context("the server's import report names no root")?;
                    if r.cid != root.cid.to_string() || !r.pinned {
                        bail!(
                            "the server did not pin {} ({})",
                            root.cid,
                            r.reason.as_deref().unwrap_or("it reports another root")
                        );
                    }
                    (root, report.blocks, report.new_blocks)
                }
            };
            root
        }
    };
    progress.finish(&format!(
        "cidgate: added {} of files as {} blocks ({new_blocks} new, DAG {}) in {:.1} s ({}); root {} pinned",
        size(root.content_size.max(progress.done())),
        blocks,
        size(root.dag_size),
        progress.elapsed().as_secs_f64(),
        cli::rate(progress.done(), progress.elapsed()),
        root.cid,
    ));
    println!("{}", root.cid);
    Ok(())
}

async fn export(
    config: &Config,
    admin: Option<&str>,
    target_path: &str,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let target_path = target_path.trim_start_matches("/ipfs/");
    let mut parts = target_path.split('/').filter(|s| !s.is_empty());
    let root_text = parts.next().unwrap_or("");
    let root: Cid = root_text
        .parse()
        .with_context(|| format!("invalid CID {root_text:?}"))?;
    let segments: Vec<String> = parts.map(str::to_string).collect();
    type CarStream = Pin<Box<dyn Stream<Item = anyhow::Result<Bytes>> + Send>>;
    let (dag_size, mut car): (Option<u64>, CarStream) = match target(config, admin)? {
        Target::Store(store) => {
            let resolved = resolve(&store, root, &segments).await?;
            let dag_size = dag::dag_size(&store, &resolved.target).await?;
            // No size limit: the operator's own store, streamed with bounded memory.
            let rx = dag::resolved_car::<std::io::Error>(Arc::new(store), resolved, u64::MAX);
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|r| r.context("reading the DAG"));
            (dag_size, Box::pin(stream))
        }
        Target::Server(client) => {
            let export = client.export(target_path).await?;
            (
                export.dag_size,
                Box::pin(export.body.map(|r| r.map_err(Into::into))),
            )
        }
    };
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match output {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let progress = Progress::new("export", dag_size);
    let written = async {
        while let Some(chunk) = car.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await.context("writing the CAR")?;
            progress.add(chunk.len() as u64);
        }
        out.flush().await.context("writing the CAR")?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = written {
        progress.clear();
        if let Some(p) = output {
            // A partial CAR must not pass for a whole one.
            let _ = tokio::fs::remove_file(p).await;
        }
        return Err(e);
    }
    progress.finish(&format!(
        "cidgate: exported {target_path}: {} of CAR in {:.1} s ({}) to {}",
        size(progress.done()),
        progress.elapsed().as_secs_f64(),
        cli::rate(progress.done(), progress.elapsed()),
        output.map_or("standard output".into(), |p| p.display().to_string()),
    ));
    Ok(())
}

/// `cidgate prewarm`: one line per DAG saying what stayed in the edge cache.
async fn prewarm(client: &AdminClient, cids: &[String]) -> anyhow::Result<()> {
    let mut events = client.prewarm(cids).await?;
    let mut progress: Option<(String, Progress)> = None;
    let (mut failed, mut partial) = (0, 0);
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if !ev.done {
            let same = progress.as_ref().is_some_and(|(c, _)| *c == ev.cid);
            if !same {
                progress = Some((ev.cid.clone(), Progress::new(&ev.cid, None)));
            }
            if let Some((_, p)) = &progress {
                p.set(ev.bytes);
            }
            continue;
        }
        if let Some((_, p)) = progress.take() {
            p.clear();
        }
        if ev.error.is_some() {
            failed += 1;
        } else if !cli::prewarm_complete(&ev) {
            partial += 1;
        }
        println!("{}", cli::prewarm_line(&ev));
    }
    if let Some((_, p)) = progress.take() {
        p.clear();
    }
    if failed > 0 {
        bail!("{failed} of {} prewarms failed", cids.len());
    }
    if partial > 0 {
        eprintln!(
            "cidgate: {partial} of {} DAGs are only partly in the edge cache",
            cids.len()
        );
    }
    Ok(())
}
