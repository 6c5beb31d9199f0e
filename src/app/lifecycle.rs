//! A running gateway's life: configuration reloads on SIGHUP, metrics of the denylists, and
//! shutdown on SIGINT / SIGTERM.

use std::sync::Arc;

use super::middleware::{LiveSettings, RequestDeadlines};
use super::ConfigSource;
use crate::config::Config;
use crate::denylist::DenylistService;
use crate::server::{Admission, ClientLimits};
use crate::telemetry::Metrics;
use crate::tiers::cold::ColdTier;

/// Mirrors the denylists' figures in metrics, every few seconds.
pub(super) async fn publish_denylist_stats(denylists: DenylistService, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let stats = denylists.stats();
        metrics.denylist_rules.set(stats.rules as i64);
        for list in &stats.lists {
            let labels = crate::telemetry::ListName {
                list: list.name.to_string(),
            };
            metrics
                .denylist_list_rules
                .get_or_create(&labels)
                .set(list.rules as i64);
            metrics
                .denylist_failures
                .get_or_create(&labels)
                .set(list.failures as i64);
            if let Some(t) = list.last_success {
                metrics
                    .denylist_last_success
                    .get_or_create(&labels)
                    .set(t as i64);
            }
        }
    }
}

/// The SIGHUP listener of `serve`, registered before anything slow starts.
pub(super) struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    pub(super) fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP: no reloads");
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads what can change without a restart.
pub(super) async fn wait_for_shutdown(reloader: &mut Reloader, hangup: Hangup) {
    #[cfg(unix)]
    if let Some(mut hup) = hangup.signal {
        let stop = wait_for_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = hup.recv() => reloader.reload().await,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (reloader, hangup);
    wait_for_signal().await;
}

/// The request deadlines `config` sets.
pub(super) fn deadlines_of(config: &Config) -> RequestDeadlines {
    RequestDeadlines {
        retrieval: config.server.retrieval_timeout,
        stall: config.server.stall_timeout,
        total: config.server.max_request_duration,
    }
}

/// Keys SIGHUP applies to the running process; a change to any other key needs a restart.
pub const RELOADABLE: &[&str] = &[
    "telemetry.log",
    "telemetry.access_log",
    "server.max_concurrent_requests",
    "server.max_requests_per_client",
    "server.client_rate",
    "server.client_burst",
    "server.retrieval_timeout",
    "server.stall_timeout",
    "server.max_request_duration",
    "cold.providers",
    "dnslink.names",
];

/// Re-reads the configuration on SIGHUP and applies what can change while running.
pub(super) struct Reloader {
    /// The configuration the process started with (keys that need a restart keep its values).
    pub(super) started: Config,
    pub(super) source: ConfigSource,
    pub(super) live: Arc<LiveSettings>,
    pub(super) admission: Arc<Admission>,
    pub(super) names: crate::ipns::NameResolver,
    pub(super) cold: Option<Arc<ColdTier>>,
    pub(super) denylists: DenylistService,
}

impl Reloader {
    /// Reads and validates the configuration again and applies it; a configuration that does
    /// not load is logged and the running one stays. Never ends the process.
    async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration and the denylists");
        match Config::effective(
            self.source.file.as_deref(),
            std::env::vars(),
            &self.source.overrides,
        ) {
            Ok(new) => self.apply(&new),
            Err(e) => tracing::error!(
                error = %e,
                "configuration reload failed; the running configuration stays in force"
            ),
        }
        match self.denylists.reload_now().await {
            Ok(()) => {
                tracing::info!(rules = self.denylists.stats().rules, "denylists reloaded")
            }
            Err(e) => {
                tracing::warn!(error = %e, "denylist reload failed; the previous lists stay in force")
            }
        }
    }

    fn apply(&mut self, new: &Config) {
        if let Some(log) = &self.source.log {
            match log.set_filter(&new.telemetry.log) {
                Ok(true) => {}
                Ok(false) => tracing::info!("RUST_LOG is set: it stays the log filter"),
                Err(e) => tracing::error!(error = %e, "log filter not changed"),
            }
        }
        self.live.set_access_log(new.telemetry.access_log);
        self.live.set_deadlines(deadlines_of(new));
        let s = &new.server;
        self.admission.set_limits(
            s.max_concurrent_requests,
            ClientLimits {
                max_concurrent: s.max_requests_per_client,
                rate: s.client_rate,
                burst: s.client_burst,
            },
        );
        match &self.cold {
            Some(cold) => cold.set_static_providers(&new.cold.providers),
            None if !new.cold.providers.is_empty() => tracing::warn!(
                "cold.providers is set but the cold tier was off at start: restart to turn it on"
            ),
            None => {}
        }
        self.names.set_dnslink(new.dnslink.names.clone());
        let restart = changed_keys(&self.started, new)
            .into_iter()
            .filter(|k| !RELOADABLE.contains(&k.as_str()))
            .collect::<Vec<_>>();
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "changed keys that apply only after a restart; their running values stay"
            );
        }
        tracing::info!(
            log = %new.telemetry.log,
            access_log = new.telemetry.access_log,
            max_concurrent_requests = s.max_concurrent_requests,
            client_rate = s.client_rate,
            providers = new.cold.providers.len(),
            dnslink_names = new.dnslink.names.len(),
            "configuration reloaded"
        );
    }
}

/// Dotted keys whose values differ between `a` and `b` (lists and free-form tables compared
/// whole).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn leaves(
        v: &toml::Value,
        prefix: &str,
        out: &mut std::collections::BTreeMap<String, toml::Value>,
    ) {
        match v {
            toml::Value::Table(t) if prefix != "dnslink.names" => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(v, &key, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let (mut la, mut lb) = (Default::default(), Default::default());
    if let (Ok(va), Ok(vb)) = (toml::Value::try_from(a), toml::Value::try_from(b)) {
        leaves(&va, "", &mut la);
        leaves(&vb, "", &mut lb);
    }
    la.keys()
        .chain(lb.keys())
        .filter(|k| la.get(*k) != lb.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

pub(super) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
