# bidsapp: parcel timeseries from fMRIPrep derivatives, as a BIDS-App container.
#
#   docker build -t bidsapp .
#   docker run --rm --read-only -u "$(id -u):$(id -g)" \
#     -v /data/fmriprep:/data:ro -v /data/out:/out -v /scratch:/work \
#     bidsapp /data /out participant --work-dir /work
#
# BASE_IMAGE must provide python3 (>= 3.10, with the venv module) and /bin/sh; Boutiques
# replaces the ENTRYPOINT with a /bin/sh script. Building from a local Debian base made with
# debootstrap works too: --build-arg BASE_IMAGE=localhost/debian-python:bookworm.
ARG BASE_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------------------------
# Build stage: install the package into a virtual environment and pre-fetch the atlases the
# CLI offers by default, so that runs need no network.
FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/bidsapp

COPY pyproject.toml README.md LICENSE /src/
COPY bidsapp /src/bidsapp
RUN /opt/bidsapp/bin/python -m pip install --no-cache-dir "/src[fast]" \
    && /opt/bidsapp/bin/python -m compileall -q /opt/bidsapp/lib

# The default atlas (bidsapp.app.config.DEFAULT_ATLAS) in the default space, at the resolutions
# TemplateFlow has for it, plus its look-up table. Add atlases here (space:atlas:desc) and
# rebuild to use them offline.
ARG TEMPLATEFLOW_PREFETCH="MNI152NLin2009cAsym:Schaefer2018:400Parcels7Networks"
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN /opt/bidsapp/bin/python -c "import sys; from templateflow import api; \
[print(api.get(s, atlas=a, desc=d, suffix='dseg', raise_empty=True)) \
 for s, a, d in (x.split(':') for x in sys.argv[1].split())]" "${TEMPLATEFLOW_PREFETCH}" \
    && chmod -R a+rX,a-w /opt/templateflow

# ---------------------------------------------------------------------------------------------
# Run stage: no compilers, no sources; everything root-owned and read-only for the user.
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/bidsapp/bidsapp
LABEL org.opencontainers.image.title="bidsapp" \
      org.opencontainers.image.description="Denoised parcel timeseries from fMRIPrep derivatives (BIDS-App)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/bidsapp /opt/bidsapp
COPY --from=build /opt/templateflow /opt/templateflow

# A named user for `docker run` without -u; any other uid works too (`-u $(id -u)`,
# Singularity/Apptainer), because nothing below is written at run time.
# bidsapp is also linked into /usr/local/bin: Boutiques runs its command line in a `/bin/sh -l`
# script under Apptainer, and a login shell resets PATH from /etc/profile.
RUN useradd --no-log-init --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bidsapp \
    && ln -s /opt/bidsapp/bin/bidsapp /usr/local/bin/bidsapp \
    && /bin/sh -lc 'bidsapp --version'

# TEMPLATEFLOW_HOME is read-only and holds the pre-fetched atlases; `-e TEMPLATEFLOW_HOME=...`
# (Apptainer: `--env TEMPLATEFLOW_HOME=...`) points bidsapp at another one. Caches go under
# --work-dir, or a temporary directory when it is not given. MPLCONFIGDIR is left unset on
# purpose: bidsapp points it at the work directory.
ENV PATH=/opt/bidsapp/bin:${PATH} \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BIDSAPP_CONTAINER="docker://ghcr.io/bidsapp/bidsapp:${VERSION}"

USER 10001:10001
ENTRYPOINT ["bidsapp"]
CMD ["--help"]
