# syntax=docker/dockerfile:1.7
# clinic-operator: a static binary on distroless/static, run as non-root. No shell, no package
# manager at run time; the root filesystem can be mounted read-only (the chart does).
#
#   docker build -t clinic-operator:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/audioprothese/clinic-operator:0.1.0 .

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
# musl for a static binary; the cross linkers for the other architecture.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools gcc-aarch64-linux-gnu gcc-x86-64-linux-gnu \
 && rm -rf /var/lib/apt/lists/*
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl > /target ;; \
      arm64) echo aarch64-unknown-linux-musl > /target ;; \
      *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /target)"
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_musl=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    RUSTFLAGS="-C target-feature=+crt-static"
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY operator ./operator
COPY e2e ./e2e
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p clinic-operator --target "$(cat /target)" \
 && cp "target/$(cat /target)/release/clinic-operator" /clinic-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="clinic-operator" \
      org.opencontainers.image.description="Kubernetes operator for OpenMRS clinics" \
      org.opencontainers.image.source="https://github.com/audioprothese/clinic-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /clinic-operator /clinic-operator
# distroless' nonroot user; the chart sets the same ids.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/clinic-operator"]
CMD ["run", "--log-format=json"]
