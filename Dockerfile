# principald: multi-stage build, slim non-root runtime.
#   docker build -t principald .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-sys and the bundled SQLite build with the image's gcc; protoc is vendored by build.rs.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY vendor vendor
COPY migrations migrations
COPY src src
RUN cargo build --release --locked --bin principald --bin principalctl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/principald --create-home principald \
 && install -d -m 0700 -o principald -g principald /var/lib/principald/data /var/lib/principald/agent \
 && install -d -m 0755 -o principald -g principald /run/principald-agent /run/principald-join
COPY --from=build /src/target/release/principald /src/target/release/principalctl /usr/local/bin/
USER principald
WORKDIR /var/lib/principald
ENV PRINCIPALD_DATA_DIR=/var/lib/principald/data \
    PRINCIPALD_LISTEN=0.0.0.0:8443 \
    PRINCIPALD_HEALTH_LISTEN=0.0.0.0:8080 \
    PRINCIPALD_PKI_LISTEN=0.0.0.0:8081 \
    PRINCIPALD_LOG_FORMAT=json
# PRINCIPALD_PKI_URL (the public address of port 8081, written into certificates) must be set at run time: principald
# refuses to name a loopback or wildcard address in certificates when it listens on a public one.
# `principald agent` (the same image): --data-dir /var/lib/principald/agent, --socket /run/principald-agent/api.sock.
EXPOSE 8443 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["principald"]
CMD ["serve"]
