# One image for both components; the manifests pick the program with `command:`
# (lbspeaker-controller for the Deployment, lbspeaker-speaker for the DaemonSet).
#
#   docker build -t ghcr.io/lbspeaker/lbspeaker:0.1.0 .
#
# Build stage: install lbspeaker and its dependencies (ExaBGP, scapy, pyroute2, the
# kubernetes client ...) into a virtualenv; the runtime stage copies only that venv,
# so no compiler, pip cache or source tree ends up in the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/lbspeaker
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lbspeaker ./lbspeaker
RUN /opt/lbspeaker/bin/pip install . \
 && /opt/lbspeaker/bin/python -c "import exabgp, scapy, pyroute2, kubernetes" \
 && /opt/lbspeaker/bin/lbspeaker-controller --help >/dev/null \
 && /opt/lbspeaker/bin/lbspeaker-speaker --help >/dev/null \
 && /opt/lbspeaker/bin/lbctl --help >/dev/null

FROM python:3.11-slim
LABEL org.opencontainers.image.source="https://github.com/lbspeaker/lbspeaker" \
      org.opencontainers.image.description="lbspeaker: bare-metal LoadBalancer for Kubernetes (controller + speaker)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric non-root user: Kubernetes' runAsNonRoot can only verify a numeric USER.
# The controller runs as it; the speaker's manifest overrides it with UID 0 plus only
# NET_RAW/NET_ADMIN (capabilities take effect only for UID 0 without ambient caps).
RUN groupadd --system --gid 65532 lbspeaker \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin lbspeaker
COPY --from=build /opt/lbspeaker /opt/lbspeaker
# Read-only root filesystem in the manifests: never write .pyc files, log unbuffered.
ENV PATH=/opt/lbspeaker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# No ENTRYPOINT: each manifest sets `command:`. Run alone, the image explains itself.
CMD ["lbspeaker-controller", "--help"]
