# syntax=docker/dockerfile:1
#
# One build, one small image per binary. The stage names are the image names the
# manifests use (ghcr.io/staticpod-operator/<stage>):
#
#   docker build --target staticpod-webhook    -t ghcr.io/staticpod-operator/staticpod-webhook:0.1.0 .
#   docker build --target staticpod-controller -t ghcr.io/staticpod-operator/staticpod-controller:0.1.0 .
#   docker build --target staticpod-agent      -t ghcr.io/staticpod-operator/staticpod-agent:0.1.0 .
#
# The README has the loop and how to load the images into kind/k3d/containerd.

# The toolchain of rust-toolchain.toml; bookworm to match the runtime's glibc.
ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are
# copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p staticpod-webhook -p staticpod-controller -p staticpod-agent -p staticpod-certs \
 && mkdir /out \
 && cp target/release/staticpod-webhook target/release/staticpod-controller \
       target/release/staticpod-agent target/release/staticpod-certs /out/

# distroless/cc: glibc and libgcc only (no shell, no package manager). TLS is rustls
# with ring, so no OpenSSL. The webhook and controller run as the image's nonroot
# user (65532), which the manifests also set.
FROM gcr.io/distroless/cc-debian12:nonroot AS staticpod-webhook
COPY --from=build /out/staticpod-webhook /usr/local/bin/staticpod-webhook
USER 65532:65532
EXPOSE 9443 8081
ENTRYPOINT ["/usr/local/bin/staticpod-webhook"]

FROM gcr.io/distroless/cc-debian12:nonroot AS staticpod-controller
COPY --from=build /out/staticpod-controller /usr/local/bin/staticpod-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/staticpod-controller"]

# The agent runs as root: it writes the kubelet's root-owned
# /etc/kubernetes/manifests (the DaemonSet drops every capability all the same).
FROM gcr.io/distroless/cc-debian12 AS staticpod-agent
COPY --from=build /out/staticpod-agent /usr/local/bin/staticpod-agent
USER 0:0
ENTRYPOINT ["/usr/local/bin/staticpod-agent"]

# The certificate tool, for installs without cert-manager run from a container:
#   docker run --rm -u "$(id -u)" -v "$PWD:/work" -w /work \
#     ghcr.io/staticpod-operator/staticpod-certs:0.1.0 --out-dir staticpod-install
FROM gcr.io/distroless/cc-debian12:nonroot AS staticpod-certs
COPY --from=build /out/staticpod-certs /usr/local/bin/staticpod-certs
ENTRYPOINT ["/usr/local/bin/staticpod-certs"]
