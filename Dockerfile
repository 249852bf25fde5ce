# One image for both components; the manifests pick the program with `command:`
# (lbspeaker-controller for the Deployment, lbspeaker-speaker for the DaemonSet).
#
#   docker build -t lbspeaker:dev .
#   sudo ./dev image          # the same with podman, on a Debian base made by mmdebstrap (no registry)
#
# BASE is any image with Python >= 3.11 as `python3` and its `venv` module: a registry image by
# default, or a local one (`./dev image` imports a Debian bookworm minbase). Both stages use it, so
# the venv's interpreter symlink resolves in the runtime stage.
#
# Build stage: install lbspeaker and its dependencies (ExaBGP, scapy, pyroute2, the kubernetes
# client ...) into a virtualenv, then trim it; the runtime stage copies only that venv, so no
# pip, compiler, cache or source tree ends up in the image.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/lbspeaker
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a change to lbspeaker's code reuses this layer.
COPY pyproject.toml ./
RUN /opt/lbspeaker/bin/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/lbspeaker/bin/pip install --no-compile -r /tmp/requirements.txt
COPY README.md ./
COPY lbspeaker ./lbspeaker
# Trim what no program of the image runs (each checked below by importing and running them):
# - the installers: pip, setuptools, wheel;
# - kubernetes.aio, the client's asyncio twin (41 MB with bytecode; lbspeaker uses the sync
#   client), and aiohttp with its helpers, which only kubernetes.aio imports;
# - test suites that dependencies ship;
# - bytecode of modules nothing imports. The root filesystem is read-only at run time, so the
#   bytecode of what the programs DO import is compiled here (importing them writes it): without
#   it every start recompiles in memory, seconds of CPU per speaker. ExaBGP (started by the
#   speaker as `python -m exabgp`) is compiled whole.
RUN /opt/lbspeaker/bin/pip install --no-compile --no-deps . \
 && /opt/lbspeaker/bin/pip uninstall -q -y aiohttp aiohttp-retry aiosignal aiohappyeyeballs \
        frozenlist multidict propcache yarl \
 && /opt/lbspeaker/bin/python -m pip uninstall -q -y pip setuptools \
 && site=$(/opt/lbspeaker/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site/kubernetes/aio" "$site"/_distutils_hack "$site"/distutils-precedence.pth \
 && find "$site" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} + \
 && find /opt/lbspeaker -name __pycache__ -prune -exec rm -rf {} + \
 && rm -f /opt/lbspeaker/bin/activate* /opt/lbspeaker/bin/pip* \
 && /opt/lbspeaker/bin/python -c "import sys, lbspeaker.controller.main, lbspeaker.speaker.main, lbspeaker.lbctl; \
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'pip', 'setuptools')); \
        assert not bad, bad" \
 && /opt/lbspeaker/bin/python -m compileall -q "$site/exabgp" \
 && /opt/lbspeaker/bin/lbspeaker-controller --help >/dev/null \
 && /opt/lbspeaker/bin/lbspeaker-speaker --help >/dev/null \
 && /opt/lbspeaker/bin/lbctl --help >/dev/null \
 && /opt/lbspeaker/bin/python -m exabgp version >/dev/null
# A numeric non-root user: Kubernetes' runAsNonRoot can only verify a numeric USER. Made here
# by hand (the base may have no useradd) and copied, so the runtime stage has no RUN step (a RUN step would leave the mount points of
# the build's CA bundle and pip config, empty, in the image).
RUN echo 'lbspeaker:x:65532:65532:lbspeaker:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'lbspeaker:x:65532:' >> /etc/group

FROM ${BASE}
LABEL org.opencontainers.image.source="https://github.com/lbspeaker/lbspeaker" \
      org.opencontainers.image.description="lbspeaker: bare-metal LoadBalancer for Kubernetes (controller + speaker)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The controller runs as UID 65532; the speaker's manifest overrides it with UID 0 plus only
# NET_RAW/NET_ADMIN (capabilities take effect only for UID 0 without ambient caps).
COPY --from=build /etc/passwd /etc/group /etc/
COPY --from=build /opt/lbspeaker /opt/lbspeaker
# Read-only root filesystem in the manifests: never try to write .pyc files, log unbuffered.
ENV PATH=/opt/lbspeaker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# No ENTRYPOINT: each manifest sets `command:`. Run alone, the image explains itself.
CMD ["lbspeaker-controller", "--help"]
