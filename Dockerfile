# syntax=docker/dockerfile:1
# grantd: build with cargo, run as a non-root user with the SQLite file on a volume.

FROM rust:1.88-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations/Cargo.toml migrations/Cargo.toml
COPY proto proto
RUN mkdir -p src migrations/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs migrations/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src migrations/src
COPY src src
COPY migrations/src migrations/src
RUN touch src/main.rs src/lib.rs migrations/src/lib.rs && cargo build --release --locked --bin grantd

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/grantd --create-home grantd
COPY --from=build /src/target/release/grantd /usr/local/bin/grantd
USER grantd
WORKDIR /var/lib/grantd
VOLUME ["/var/lib/grantd"]
ENV GRANTD_LISTEN=0.0.0.0:50051
EXPOSE 50051
ENTRYPOINT ["grantd"]
CMD ["serve"]
