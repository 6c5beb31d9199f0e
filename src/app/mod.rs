//! `cidgate serve`: open the store, add the sample, build the tiers, start the public and admin
//! listeners, and shut down gracefully on SIGINT / SIGTERM. By concern:
//! - [`middleware`]: what wraps every public request (panic isolation, deadlines, timing, tier
//!   headers, metrics, access log, demand);
//! - [`build`]: the block sources, the hot layer's pins, the cold tier and the name resolver as
//!   the configuration describes them;
//! - [`lifecycle`]: reloading on SIGHUP, shutting down on SIGINT / SIGTERM;
//! - this file: the wiring of one `serve`.

mod build;
mod lifecycle;
mod middleware;

pub use build::{cold_tier, ensure_sample, hot_pins, tiered_source};
use build::{maintain_store, name_resolver};
pub use lifecycle::{changed_keys, RELOADABLE};
use lifecycle::{
    deadlines_of, publish_denylist_stats, wait_for_shutdown, wait_for_signal, Hangup, Reloader,
};
pub use middleware::{GatewayHandler, LiveSettings, RequestDeadlines};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::Config;
use crate::denylist::DenylistService;
use crate::gateway::{Gateway, GatewayOptions};
use crate::popularity::tracker::SystemClock;
use crate::popularity::Popularity;
use crate::server::{self, Admission, ClientLimits, Limits};
use crate::telemetry::Metrics;
use crate::tiers::local::LocalStore;

/// File in the data directory that tells other cidgate commands where a running `serve`'s
/// admin listener is.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// Open files kept for the store, logs and connections to the hot node and the providers.
const FD_FOR_THE_PROCESS: u64 = 256;

/// Connections the admin listener takes at once.
const ADMIN_CONNECTIONS: usize = 64;

/// Over-limit connections answered with a 503 at once (see `server::Limits::max_refusing`).
const MAX_REFUSING: usize = 128;

/// The same for the admin listener.
const ADMIN_REFUSING: usize = 16;

/// Where the data directory's running server listens, if one does.
pub fn running_admin_url(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_ADDR_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Where `serve`'s configuration came from, so that SIGHUP can read it again the same way.
#[derive(Default)]
pub struct ConfigSource {
    /// `--config`, if given.
    pub file: Option<PathBuf>,
    /// The command-line flags that override the file and the environment.
    pub overrides: crate::config::Overrides,
    /// The log filter's reload handle (absent when logging was set up elsewhere).
    pub log: Option<crate::telemetry::LogControl>,
}

/// Runs the gateway until a shutdown signal.
pub async fn serve(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    // Taken over first: SIGHUP's default action ends the process, and the store may take
    // long to open. A SIGHUP that comes during the start is applied once the server runs.
    let hangup = Hangup::listen();
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    // The admin listener is up first, so that `/healthz` and `/readyz` (503 "starting") answer
    // while the store opens, which may take long after an unclean stop.
    let admin_listener = server::bind(config.admin.listen).await?;
    let admin_addr = admin_listener.local_addr()?;
    let gate = crate::admin::AdminGate::new();
    let admin_limits = Limits {
        max_connections: ADMIN_CONNECTIONS,
        max_connections_per_client: 0,
        max_header_bytes: config.server.max_header_bytes,
        max_url_bytes: config.server.max_url_bytes,
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        send_timeout: config.server.send_timeout,
        shutdown_grace: config.server.shutdown_grace,
        max_refusing: ADMIN_REFUSING,
        trusted_proxies: server::TrustedProxies::new(config.server.trusted_proxies.clone()),
        zero_copy_sent: None,
        discard_request_bodies: false,
        direct_http1: false,
    };
    // The admin listener has connection slots of its own, so a saturated public port does
    // not lock the operator out; it is not rate limited.
    let admin_task = tokio::spawn(server::serve(
        server::Listener {
            socket: admin_listener,
            tls: None,
            limits: admin_limits,
            admission: None,
            metrics: metrics.clone(),
            gauge: "admin_connections",
        },
        gate.clone(),
        shutdown.clone(),
    ));
    let result = serve_opened(
        config, source, metrics, admin_addr, &gate, &shutdown, hangup,
    )
    .await;
    if result.is_err() {
        shutdown.cancel();
    }
    shutdown.cancel();
    let _ = admin_task.await;
    result
}

/// The rest of `serve`, once the admin listener answers.
async fn serve_opened(
    config: Config,
    config_source: ConfigSource,
    metrics: Arc<Metrics>,
    admin_addr: std::net::SocketAddr,
    gate: &crate::admin::AdminGate,
    shutdown: &CancellationToken,
    hangup: Hangup,
) -> anyhow::Result<()> {
    let store = LocalStore::from_config(&config.store)?;
    let sample = if config.server.sample {
        Some(ensure_sample(&store).await?)
    } else {
        None
    };
    let tls = if config.server.tls_cert.is_empty() {
        None
    } else {
        Some(server::tls_acceptor(
            &config.server.tls_cert,
            &config.server.tls_key,
        )?)
    };
    let s = &config.server;
    // Descriptors for the admin listener, refused connections, the store and the remote tiers
    // stay free even when the public port is full: the public port can never run the process
    // out of files.
    let reserve = FD_FOR_THE_PROCESS + (ADMIN_CONNECTIONS + MAX_REFUSING + ADMIN_REFUSING) as u64;
    let max_connections = match server::raise_fd_limit() {
        Some(files) if (s.max_connections as u64).saturating_add(reserve) > files => {
            let clamped = files.saturating_sub(reserve).max(16) as usize;
            tracing::warn!(
                configured = s.max_connections,
                open_files_limit = files,
                max_connections = clamped,
                "server.max_connections lowered to fit the open-files limit (raise LimitNOFILE / ulimit -n)"
            );
            clamped
        }
        _ => s.max_connections,
    };
    let limits = Limits {
        max_connections,
        max_connections_per_client: s.max_connections_per_client,
        max_header_bytes: s.max_header_bytes,
        max_url_bytes: s.max_url_bytes,
        header_read_timeout: s.header_read_timeout,
        idle_timeout: s.idle_timeout,
        send_timeout: s.send_timeout,
        shutdown_grace: s.shutdown_grace,
        max_refusing: MAX_REFUSING,
        trusted_proxies: server::TrustedProxies::new(s.trusted_proxies.clone()),
        zero_copy_sent: None,
        discard_request_bodies: true,
        direct_http1: s.direct_http1,
    };
    let admission = Admission::new(
        s.max_concurrent_requests,
        ClientLimits {
            max_concurrent: s.max_requests_per_client,
            rate: s.client_rate,
            burst: s.client_burst,
        },
    );
    let live = LiveSettings::new(deadlines_of(&config), config.telemetry.access_log);
    let public = server::bind(config.server.listen).await?;
    let public_addr = public.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };

    let options = GatewayOptions {
        subdomain_hosts: config.server.subdomain_hosts.clone(),
        tls: tls.is_some(),
        response_cache_bytes: config.cache.responses.as_u64(),
        max_deserialized_response_size: config.gateway.max_deserialized_response_size.as_u64(),
        max_unixfs_dag_response_size: config.gateway.max_unixfs_dag_response_size.as_u64(),
    };
    let (denylists, denylist_task) =
        DenylistService::start(&config.denylist, &config.store.dir, shutdown.clone()).await?;
    let denylist = denylists.handle();
    if !denylist.load().is_empty() {
        tracing::info!(rules = denylist.load().rules(), "denylists loaded");
    }
    let cold = cold_tier(&config, &store, &metrics)?;
    let source = tiered_source(
        &config,
        store.clone(),
        metrics.clone(),
        cold.clone(),
        denylist.clone(),
    )?;
    let popularity = if config.popularity.enabled {
        Some(Popularity::new(
            config.popularity.clone(),
            store.clone(),
            source.clone(),
            Some(source.cache().clone()),
            hot_pins(&config, &store)?,
            Arc::new(SystemClock),
            metrics.clone(),
        )?)
    } else {
        None
    };
    let names = name_resolver(&config, &store, &metrics)?;
    let hot = crate::admin::HotNode {
        backend: format!("{:?}", config.hot.backend).to_lowercase(),
        url: crate::config::mask_url(&config.hot.url),
        breaker: source.hot_breaker(),
    };
    let checker = if config.retrieval_checks.enabled {
        let remote_pins = (config.hot.backend != crate::config::HotBackend::Embedded
            || !config.hot.cluster_url.is_empty())
        .then(|| hot_pins(&config, &store))
        .transpose()?;
        let checker = crate::retrievability::Checker::new(
            crate::retrievability::Places {
                store: store.clone(),
                source: source.clone(),
                upstreams: source.upstreams(),
                hot_node: source.hot_node(),
                hot_pins: remote_pins,
                promoter: popularity.as_ref().map(|p| p.promoter.clone()),
                cold: cold.clone(),
            },
            config.retrieval_checks.clone(),
            metrics.clone(),
        )?;
        checker.spawn(shutdown.clone());
        Some(checker)
    } else {
        None
    };
    let pinset = match config.gateway.serve {
        crate::config::ServeMode::Pinned => {
            let promoter = popularity.as_ref().map(|p| p.promoter.clone());
            let index = crate::tiers::pinset::PinsetIndex::new(
                store.clone(),
                source.clone(),
                Box::new(move || {
                    promoter
                        .as_ref()
                        .map(|p| p.operator_roots())
                        .unwrap_or_default()
                }),
            )?;
            // Pins already indexed are served at once; new ones as soon as they are walked.
            index.spawn(shutdown.clone());
            Some(index)
        }
        crate::config::ServeMode::Any => None,
    };
    let mut gateway = Gateway::new(source, options)
        .with_names(names.clone())
        .with_denylist(denylist.clone(), metrics.blocked.clone());
    if let Some(index) = pinset {
        tracing::info!(
            tokens = config.gateway.access_tokens.len(),
            "dedicated gateway: serving only content reachable from the pins"
        );
        gateway = gateway.dedicated(index, config.gateway.access_tokens.clone());
    }
    // Large blocks in the page cache leave by sendfile from their segment files only where the
    // public listener can send them so: plain TCP, zero-copy on.
    store.set_zero_copy(config.cache.zero_copy && tls.is_none() && cfg!(target_os = "linux"));
    let public_limits = Limits {
        zero_copy_sent: config
            .cache
            .zero_copy
            .then(|| crate::zero_copy::ZeroCopySent {
                arena: metrics.zero_copy_bytes.clone(),
                store: metrics.zero_copy_store_bytes.clone(),
                refetched: metrics.zero_copy_store_refetches.clone(),
            }),
        ..limits.clone()
    };
    let admin = Arc::new(
        Admin::new(
            store.clone(),
            config.admin.token.clone(),
            admin_addr,
            metrics.clone(),
        )
        .with_cold(cold.clone())
        .with_checker(checker.clone())
        .with_popularity(popularity.clone())?
        .with_gateway_addr(public_addr)
        .with_public(scheme, public_addr)
        .with_hot(hot)
        .with_cache_capacity(config.cache.memory.as_u64())
        .with_sample_interval(config.admin.status_interval)
        .with_denylist(denylist.clone())
        .with_names(names.clone()),
    );
    gate.open(admin.clone());
    admin.start_sampler(shutdown.clone());
    admin.resume_pin_requests();
    let addr_file: PathBuf = config.store.dir.join(ADMIN_ADDR_FILE);
    std::fs::write(&addr_file, format!("http://{admin_addr}\n"))?;

    let public_task = tokio::spawn(server::serve(
        server::Listener {
            socket: public,
            tls,
            limits: public_limits,
            admission: Some(admission.clone()),
            metrics: metrics.clone(),
            gauge: "connections",
        },
        Arc::new(GatewayHandler::new(
            gateway,
            live.clone(),
            metrics.clone(),
            popularity.clone(),
        )),
        shutdown.clone(),
    ));
    // Announced once the public listener serves (its handler, and the metrics series it
    // creates, exist). Machine-readable lines on stdout: tests and scripts read the bound ports
    // from them. A reader that went away (a closed pipe) must not end the server, as
    // `println!` would.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "cidgate: public {scheme}://{public_addr}")
            .and_then(|()| writeln!(out, "cidgate: admin http://{admin_addr}"))
            .and_then(|()| out.flush());
    }
    tracing::info!(%public_addr, %admin_addr, store = %config.store.dir.display(), "cidgate serving");
    if let Some(root) = sample {
        // The subdomain gateway gives the site its own origin, as browsers should see it.
        let subdomain = config.server.subdomain_hosts.first().and_then(|host| {
            let label = crate::gateway::subdomain::dns_label(&root).ok()?;
            Some(format!(
                "{scheme}://{label}.ipfs.{host}:{}/",
                public_addr.port()
            ))
        });
        if let Some(url) = subdomain {
            tracing::info!("sample site: {url}");
        }
        tracing::info!("sample site (path gateway): {scheme}://{public_addr}/ipfs/{root}/");
        tracing::info!("sample listing: {scheme}://{public_addr}/ipfs/{root}/docs/");
        tracing::info!("sample CAR: {scheme}://{public_addr}/ipfs/{root}?format=car");
    }

    let mut reloader = Reloader {
        started: config.clone(),
        source: config_source,
        live,
        admission,
        names,
        cold: cold.clone(),
        denylists: denylists.clone(),
    };
    let popularity_task = popularity.clone().map(|p| {
        if !config.popularity.prewarm_file.is_empty() {
            match p.prewarm_file(&config.popularity.prewarm_file) {
                Ok(n) => tracing::info!(file = %config.popularity.prewarm_file, cids = n, "prewarming at start"),
                Err(e) => tracing::warn!(file = %config.popularity.prewarm_file, error = %e, "cannot read the prewarm file"),
            }
        }
        tokio::spawn(p.run(shutdown.clone()))
    });
    // Provider scores survive restarts: saved every 30 s (when they moved) and at shutdown.
    let saver = cold.clone().map(|c| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                let c = c.clone();
                let _ = tokio::task::spawn_blocking(move || c.save()).await;
            }
        })
    });
    let denylist_metrics = tokio::spawn(publish_denylist_stats(denylists.clone(), metrics.clone()));
    let maintenance = tokio::spawn(maintain_store(
        store.clone(),
        config.store.maintenance_interval,
    ));
    let scrub_rate = config.store.scrub_rate.as_u64();
    let scrub = (scrub_rate > 0).then(|| {
        tokio::spawn(crate::tiers::scrub::run(
            store.clone(),
            scrub_rate,
            config.store.maintenance_interval,
        ))
    });
    wait_for_shutdown(&mut reloader, hangup).await;
    admin.set_draining();
    let delay = config.server.drain_delay;
    if !delay.is_zero() {
        tracing::info!(
            delay = %humantime::format_duration(delay),
            "stopping: /readyz answers 503, serving on until the delay ends (a second signal stops now)"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_for_signal() => {}
        }
    }
    tracing::info!("shutting down: draining in-flight responses");
    shutdown.cancel();
    denylist_metrics.abort();
    // A pass in progress finishes on its blocking thread; each of its steps is crash-safe.
    maintenance.abort();
    if let Some(s) = scrub {
        s.abort();
    }
    let _ = denylist_task.await;
    let _ = public_task.await;
    if let Some(s) = saver {
        s.abort();
    }
    if let Some(t) = popularity_task {
        let _ = t.await;
    }
    if let Some(c) = cold {
        c.save();
    }
    let _ = std::fs::remove_file(&addr_file);
    tracing::info!("stopped");
    Ok(())
}
