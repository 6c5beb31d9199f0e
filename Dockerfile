# cidgate's container image.
#
# No image registry is reachable from where this is built, so the base is a build argument: an
# image made from Debian packages (see .ci/docker, which builds one with debootstrap and
# `docker import`). Debian's own Rust is too old for cidgate's dependencies, so the binary is
# built on the host (`cargo build --release`) and copied in; a multi-stage build needs a base
# with a current Rust toolchain (`--build-arg BASE=rust:1-bookworm` where a registry is
# reachable, with a builder stage of your own).
#
#   docker build --build-arg BASE=cidgate-base:bookworm -t cidgate .
#   docker run --network host -v cidgate-data:/data -e CIDGATE_SERVER__LISTEN=0.0.0.0:8080 cidgate
#
# Configuration is by CIDGATE_<SECTION>__<KEY> environment variables (or a file mounted and
# passed with --config). The data directory (store, admin.addr, denylist copies) is the volume.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ARG BINARY=target/release/cidgate
# ca-certificates: TLS to storage providers, indexers, routers and denylist subscriptions.
RUN if ! [ -e /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin cidgate \
    && mkdir -p /data && chown cidgate:cidgate /data
COPY ${BINARY} /usr/local/bin/cidgate

USER cidgate
VOLUME /data
# The admin listener stays on loopback unless configured otherwise (with admin.token).
ENV CIDGATE_SERVER__LISTEN=0.0.0.0:8080 \
    CIDGATE_TELEMETRY__LOG_FORMAT=json
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cidgate", "--data-dir", "/data"]
CMD ["serve"]
