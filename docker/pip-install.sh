#!/bin/sh
# `pip install` for the image builds. torch==2.13.0 from PyPI is the CUDA build (GBs); the CPU build comes
# from the PyTorch CPU index (TORCH_INDEX) or from docker/local/wheels, mounted at /local with a CA bundle
# for networks that intercept TLS (see docker/local/README.md). An empty TORCH_INDEX leaves that index out,
# for hosts that cannot reach it.
set -eu
if [ -f /local/ca-certificates.crt ]; then
    export PIP_CERT=/local/ca-certificates.crt
fi
exec pip install --find-links /local/wheels ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "$@"
