# BROKEN ON PURPOSE (scripts/test-validate-deploy.sh, step `dockerfile`): lint-clean and every COPY
# source exists, but benches/ is not copied while Cargo.toml declares a [[bench]] there: cargo
# refuses the manifest inside the build. Caught by `cargo fetch --locked` on the COPYed files.
ARG RUST_VERSION=1.95.0
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto/ proto/
COPY src/ src/
COPY crates/ crates/
RUN cargo build --release --locked --bin riskgate \
    && install -D -m 0755 target/release/riskgate /out/riskgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/riskgate /usr/local/bin/riskgate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/riskgate"]
