# syntax=docker/dockerfile:1
# wsdrain: a static (musl) binary on distroless/static, non-root, ~7 MB image layer,
# for linux/amd64 and linux/arm64. No registry serves this image: build it, then load
# it into your cluster or push it to your own registry (docs/quickstart.md, docs/deploy.md).
#
#   docker build --build-arg VCS_REF="$(git rev-parse --short=12 HEAD)" -t wsdrain/wsdrain:0.2.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       --build-arg VCS_REF="$(git rev-parse --short=12 HEAD)" \
#       -t registry.example.com/wsdrain:0.2.0 --push .
#
# The build stage runs on the target platform (emulated by buildx when it differs from
# the host), so each architecture is a native musl build. scripts/check-static-build
# builds the same target for the host without Docker and checks the binary is static.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# Set by BuildKit from --platform; plain `docker build` on an x86_64 host gives amd64.
ARG TARGETARCH=amd64
# The git commit `wsdrain version` and the wsdrain_build_info metric report (the build
# context has no .git, see .dockerignore).
ARG VCS_REF=unknown
ENV WSDRAIN_BUILD_COMMIT=${VCS_REF}
RUN case "${TARGETARCH}" in \
        amd64) echo x86_64-unknown-linux-musl ;; \
        arm64) echo aarch64-unknown-linux-musl ;; \
        *) echo "unsupported TARGETARCH=${TARGETARCH} (amd64 or arm64)" >&2; exit 1 ;; \
    esac > /target \
    && rustup target add "$(cat /target)" \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds (BuildKit),
# so a source edit recompiles wsdrain, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=wsdrain-target-${TARGETARCH} \
    TARGET="$(cat /target)" \
    && cargo build --release --locked --target "${TARGET}" \
    && strip -o /wsdrain "target/${TARGET}/release/wsdrain" \
    && /wsdrain version

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), tzdata; no shell,
# no libc. The binary needs none of it but the user entry.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VCS_REF=unknown
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="wsdrain" \
      org.opencontainers.image.description="A Kubernetes sidecar that ends WebSocket reconnect storms: staggered drains with a reconnect hint" \
      org.opencontainers.image.source="https://github.com/wsdrain/wsdrain" \
      org.opencontainers.image.url="https://github.com/wsdrain/wsdrain" \
      org.opencontainers.image.documentation="https://github.com/wsdrain/wsdrain#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}"
COPY --from=build /wsdrain /usr/local/bin/wsdrain
USER 65532:65532
# 15080: client traffic (--listen); 15090: admin, metrics, /prestop (--admin).
EXPOSE 15080 15090
ENTRYPOINT ["/usr/local/bin/wsdrain"]
CMD ["proxy"]
