# syntax=docker/dockerfile:1.7
# azml-operator image: built with rustls only (ring/aws-lc from source, no OpenSSL), shipped on distroless/cc
# (glibc + libgcc, no shell, no package manager) as the nonroot user 65532.
#   docker build -t ghcr.io/azml-dev/azml-operator:0.1.0 .

# Debian 12 (bookworm) builder to match the distroless/cc-debian12 glibc. kube-lease-manager needs Rust >= 1.89.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# aws-lc-sys (linked through azure_core's rustls) builds C sources with cmake; ring needs only cc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile image --locked --package azml-operator --bin azml-operator \
    && install -D -m 0755 target/image/azml-operator /out/azml-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/azml-operator /usr/local/bin/azml-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/azml-operator"]
CMD ["run"]
