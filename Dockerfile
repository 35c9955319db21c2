# syntax=docker/dockerfile:1
# grantd: build with cargo, run as a non-root user with the SQLite file on a volume.
#
#   docker build -t grantd .
#   docker run -d --name grantd -p 50051:50051 -v grantd-data:/var/lib/grantd grantd
#   docker exec grantd grantd token --subject root --admin
#
# Not built in this project's CI (no Docker engine there): CI runs hadolint on this
# file, and the RUN steps were replayed by hand in a scratch directory (see
# deploy/README.md).

FROM rust:1.88-bookworm AS build
WORKDIR /src
# The dist profile (Cargo.toml): fat LTO and one codegen unit, built once per image.
# Dependencies first: this layer is rebuilt only when the manifests, the lock file,
# build.rs or proto/ change, not on source edits.
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations/Cargo.toml migrations/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
COPY proto proto
# Cargo.toml declares [[test]] fuzz_validation and the workspace holds bench/: cargo
# refuses the manifests unless their targets exist, so empty placeholders stay for both
# builds (tests and bench/ are not built here).
RUN mkdir -p src migrations/src tests bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs migrations/src/lib.rs tests/fuzz_validation.rs bench/src/main.rs \
    && cargo build --profile dist --locked \
    && rm -rf src migrations/src
COPY src src
COPY migrations/src migrations/src
# The web console's built files, compiled into the binary (src/console.rs).
COPY console/dist console/dist
RUN touch src/main.rs src/lib.rs migrations/src/lib.rs \
    && cargo build --profile dist --locked --bin grantd

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 grantd \
    && useradd --system --uid 10001 --gid grantd --home-dir /var/lib/grantd --create-home grantd
COPY --from=build /src/target/dist/grantd /usr/local/bin/grantd
USER 10001:10001
WORKDIR /var/lib/grantd
# The SQLite database (grantd.db) and its generated token secret live here.
VOLUME ["/var/lib/grantd"]
ENV GRANTD_LISTEN=0.0.0.0:50051
EXPOSE 50051
# grpc.health.v1 over plaintext; with --tls-cert, override it in your orchestrator
# (grantd health --tls-ca ...) or rely on Kubernetes' own gRPC probe.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["grantd", "health", "--addr", "127.0.0.1:50051", "--timeout-ms", "3000"]
ENTRYPOINT ["grantd"]
CMD ["serve"]
