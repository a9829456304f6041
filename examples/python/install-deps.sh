#!/usr/bin/env bash
# Installs what examples/python needs into a virtual environment (default: target/python-venv
# of the workspace, or $RINGKV_PYTHON_VENV): python3 with venv from Debian if missing, then
# the packages of requirements.txt from PyPI. Prints the interpreter's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${RINGKV_PYTHON_VENV:-$here/../../target/python-venv}"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq python3 python3-venv >/dev/null
    else
        echo "python3 with venv is needed (install python3 and python3-venv)" >&2
        exit 1
    fi
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "$venv/bin/python"
