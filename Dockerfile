# syntax=docker/dockerfile:1
# wsdrain: a static (musl) binary on distroless/static, non-root, ~7 MB image layer.
#   docker build -t wsdrain/wsdrain:0.1.0 .
# CI has no Docker engine; scripts/check-static-build builds the same target
# (x86_64-unknown-linux-musl, --release --locked) and checks the binary is static.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN rustup target add "${TARGET}" \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds (BuildKit),
# so a source edit recompiles wsdrain, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "${TARGET}" \
    && strip -o /wsdrain "target/${TARGET}/release/wsdrain" \
    && /wsdrain version

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), tzdata; no shell,
# no libc. The binary needs none of it but the user entry.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /wsdrain /usr/local/bin/wsdrain
USER 65532:65532
# 15080: client traffic (--listen); 15090: admin, metrics, /prestop (--admin).
EXPOSE 15080 15090
ENTRYPOINT ["/usr/local/bin/wsdrain"]
CMD ["proxy"]
