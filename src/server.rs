//! Listeners: HTTP/1.1 and HTTP/2 (h2c prior knowledge, or TLS with ALPN) on one port,
//! connection and header limits that answer refusals instead of dropping them, and graceful
//! shutdown that drains in-flight responses up to a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::gateway::{body, Body};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the address failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Something that answers requests (the gateway, the admin API).
pub trait Handler: Send + Sync + 'static {
    /// Answers one request; must not fail.
    fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> ResponseFuture;
}

/// Limits applied to every connection.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent connections; further ones get 503.
    pub max_connections: usize,
    /// Largest request head in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Longest request target in bytes (414 beyond).
    pub max_url_bytes: usize,
    /// Time allowed to send the request head.
    pub header_read_timeout: Duration,
    /// Drain deadline at shutdown.
    pub shutdown_grace: Duration,
    /// Plain-TCP connections send cache-arena bytes with `sendfile`, counted here; `None` writes
    /// every byte (see [`crate::zero_copy`]).
    pub zero_copy_sent: Option<Counter>,
}

/// Loads a rustls acceptor (ALPN h2, http/1.1) from PEM files.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, ServerError> {
    let certs = {
        let mut r = std::io::BufReader::new(
            std::fs::File::open(cert)
                .map_err(|e| ServerError::Tls(format!("opening {cert}: {e}")))?,
        );
        rustls_pemfile::certs(&mut r)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Tls(format!("reading {cert}: {e}")))?
    };
    let key = {
        let mut r = std::io::BufReader::new(
            std::fs::File::open(key)
                .map_err(|e| ServerError::Tls(format!("opening {key}: {e}")))?,
        );
        rustls_pemfile::private_key(&mut r)
            .map_err(|e| ServerError::Tls(format!("reading {key}: {e}")))?
            .ok_or_else(|| ServerError::Tls(format!("no private key in {key}")))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds a listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn plain_response(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(body::full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `handler` on `listener` until `shutdown` fires, then drains for up to the grace period.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(&limits));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = slots.clone().try_acquire_owned().ok();
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let max_url = limits.max_url_bytes;
        let zero_copy_sent = limits.zero_copy_sent.clone();
        tokio::spawn(async move {
            let overloaded = permit.is_none();
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    if overloaded {
                        let mut r = plain_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many connections, retry later",
                        );
                        r.headers_mut()
                            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                        r.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    let target_len = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().len())
                        .unwrap_or(0);
                    if target_len > max_url {
                        return Ok(plain_response(
                            StatusCode::URI_TOO_LONG,
                            "request target too long",
                        ));
                    }
                    Ok(handler.call(req, peer).await)
                }
            });
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => match zero_copy_sent {
                    #[cfg(target_os = "linux")]
                    Some(sent) => {
                        let stream = crate::zero_copy::ZeroCopyStream::new(stream, sent);
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    _ => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                },
            };
            drop(permit);
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}
