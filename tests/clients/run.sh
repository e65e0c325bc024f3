#!/usr/bin/env bash
# Opens a lidscope result directory with real Parquet clients (pandas, pyarrow, polars, DuckDB).
# Usage: tests/clients/run.sh <lidscope binary> [fixtures dir]
# The clients are installed with pip into a virtual environment ($LIDSCOPE_VENV, default
# /var/tmp/lidscope-venv), kept between runs. If pip cannot reach its registry this fails: the
# test never passes without having run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: $0 <lidscope binary> [fixtures dir]}"
fixtures="${2:-${LIDSCOPE_FIXTURES:-$here/../../../shared/fixtures}}"
venv="${LIDSCOPE_VENV:-/var/tmp/lidscope-venv}"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
packages=(pyarrow pandas polars duckdb)
if ! "$venv/bin/python" -c 'import pyarrow, pandas, polars, duckdb' 2>/dev/null; then
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"; then
    echo "client test: pip could not install ${packages[*]} (is the package registry reachable?); the test did not run" >&2
    exit 1
  fi
fi
exec "$venv/bin/python" "$here/readers.py" --lidscope "$bin" --fixtures "$fixtures"
