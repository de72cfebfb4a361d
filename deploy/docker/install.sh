#!/bin/sh
# Runs inside `docker build` (deploy/docker/Dockerfile): the OS packages and the venv when the base
# lacks them, then backup-pipelines[deploy] from the context's wheels, with no index (offline build).
set -eu
missing=""
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"
if [ -n "$missing" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  rm -rf /var/lib/apt/lists/*
fi
[ -x "$VIRTUAL_ENV/bin/python" ] || python3 -m venv "$VIRTUAL_ENV"
wheel=$(ls /tmp/build/wheels/backup_pipelines-*.whl)
"$VIRTUAL_ENV/bin/pip" install -q --no-index --no-cache-dir --disable-pip-version-check \
  --find-links /tmp/build/wheels "backup-pipelines[deploy] @ file://$wheel"
mkdir -p "$DAGSTER_HOME" /opt/dagster/app
# Fail the build, not the first run, if the code location cannot import.
"$VIRTUAL_ENV/bin/python" -c 'import backup_pipelines.defs, dagster_docker, dagster_k8s, dagster_aws, dagster_postgres'
