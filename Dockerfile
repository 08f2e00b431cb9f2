# licenseserver in a container: the primary, or with "--role=failover --primary HOST"
# after the image name, its failover (see docs/operations.md, "Running in a container").
#
#   docker build -t licenseserver .
#   docker run -d -p 35355:35355 -p 8088:8088 -v licenseserver-data:/data licenseserver

# Build the wheel from the source tree (the plugin, the pages and the static files in it).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin licenseserver \
    && install -d -o licenseserver -g licenseserver -m 0750 /data
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER licenseserver
WORKDIR /data
# The data directory: the store, the keys, the pairing secret, the first admin password.
VOLUME /data
# Licensing, and the admin's web page.
EXPOSE 35355 8088
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:8088/healthz', timeout=4); sys.exit(0)"]
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "licenseserver", "--data", "/data"]
CMD []
