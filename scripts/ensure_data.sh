#!/usr/bin/env bash
# Make sure the embedded default data (Fashion-MNIST, Debian's dataset-fashion-mnist) is here.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
if [ -n "${ROADMAP_FASHION_MNIST:-}" ] && [ -d "${ROADMAP_FASHION_MNIST}" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing Fashion-MNIST (apt-get install dataset-fashion-mnist, ~31 MB)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  exit 0
fi
echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or set" \
     "ROADMAP_FASHION_MNIST=/path/to/the/four/idx/files, or pass --data PATH" >&2
exit 1
