# The reefguard GitHub Action: Python 3.11, CPU-only torch, git and git-lfs, and the package with its pinned
# dependencies. Actions runs the image as root with the workspace mounted as the working directory, so there is
# no USER and no WORKDIR (GitHub docs, "Dockerfile support for GitHub Actions").
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    REEFGUARD_NO_PROGRESS=1

# git diffs the pushed commits; git-lfs fetches weights the checkout left as pointers. Debian security
# updates replace exact package versions, so these follow the pinned base image instead of being pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git git-lfs \
    && rm -rf /var/lib/apt/lists/*

# torch first, exactly pinned, from the CPU index: the default Linux wheel pulls in gigabytes of CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0

# The dependencies, pinned by the lock file, in their own layer: it is rebuilt only when they change.
COPY requirements.lock pyproject.toml /src/
RUN python -c "import tomllib; print(*tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /src/requirements.in \
    && pip install --no-cache-dir -c /src/requirements.lock -r /src/requirements.in

# Then the package itself; --no-deps, so nothing is resolved past the lock.
COPY README.md /src/
COPY bot /src/bot
RUN pip install --no-cache-dir --no-deps /src

ENTRYPOINT ["/usr/local/bin/reefguard", "action"]
