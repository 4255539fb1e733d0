FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# CPU-only torch first, from PyTorch's CPU index, so pip does not pull a CUDA build
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml setup.py README.md LICENSE ./
COPY server ./server
COPY frontend ./frontend
COPY data ./data
RUN pip install -e . && useradd --create-home --uid 10001 explorer
USER explorer
# training runs persist here (made by the explorer user, so that it can write): mount a volume to keep them
RUN mkdir -p /home/explorer/.backprop-explorer
VOLUME /home/explorer/.backprop-explorer

EXPOSE 8000
# asks port 8000 inside the container: arguments that move the server to another port fail this check
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status != 200)"
# `docker run IMAGE ARGS...` replaces the default arguments below whole (keep --host 0.0.0.0 and --port 8000);
# `--no-healthcheck --entrypoint python IMAGE -m server.runs.train_worker ...` runs a training worker from it
ENTRYPOINT ["python", "-m", "server"]
# one worker process per core for a class (each listens on its own SO_REUSEPORT socket)
CMD ["--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
