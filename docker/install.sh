#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs this script, and so does
# tests/packaging (CI has no Docker engine, so the same steps are checked in a clean venv there).
#   docker/install.sh SOURCE_DIR VENV_DIR
# Builds the pgx-cds wheel (it carries the bundled knowledge), installs it with the exact versions of
# constraints.txt into a new virtual environment, and checks the installed knowledge.
set -eu
src=$1
venv=$2
wheels=$(mktemp -d)
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -c "$src/constraints.txt" pip
"$venv/bin/pip" wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$src"
"$venv/bin/pip" install --quiet --disable-pip-version-check -c "$src/constraints.txt" "$wheels"/pgx_cds-*.whl
rm -rf "$wheels"
# From another directory, so the knowledge found is the installed copy, not a checkout.
cd /
"$venv/bin/cds" validate
