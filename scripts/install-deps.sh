#!/usr/bin/env bash
# Installs the Debian packages lt needs to build (and, with --test, to run its test suite; with
# --fuzz, clang and its sanitizer/libFuzzer runtimes for `make fuzz`, which `make test` never
# needs). Safe to run repeatedly: only missing packages are installed. Needs root or sudo.
set -euo pipefail

build_pkgs=(build-essential pkg-config libhdf5-dev libturbojpeg0-dev libjpeg62-turbo-dev
            libzstd-dev libopenblas-dev libpng-dev zlib1g-dev hdf5-tools help2man
            openmpi-bin libopenmpi-dev)
test_pkgs=(python3 python3-torch python3-torchvision python3-h5py python3-pil python3-numpy
           python3-venv python3-pytest python3-matplotlib man-db)

fuzz_pkgs=(clang libclang-rt-dev libomp-dev)

want=("${build_pkgs[@]}")
[ "${1:-}" = "--test" ] && want+=("${test_pkgs[@]}")
[ "${1:-}" = "--fuzz" ] && want+=("${fuzz_pkgs[@]}")

# Interop tests use the libraries users have: PyPI's h5py + hdf5plugin and safetensors, and
# tensorboard to read lt-train's event files, in a venv over Debian's python3 (whose numpy and
# torch/torchvision stay the reference). A venv made before tensorboard was needed gets it too.
make_venv() {
  local root venv
  root=$(cd "$(dirname "$0")/.." && pwd)
  venv="$root/.venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import hdf5plugin, safetensors" 2>/dev/null; then
    echo "install-deps: creating $venv (PyPI h5py, hdf5plugin, safetensors)" >&2
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --ignore-installed \
      h5py hdf5plugin safetensors >&2
  fi
  # without --ignore-installed: Debian's numpy meets tensorboard's requirement and stays
  if ! "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
    echo "install-deps: adding PyPI tensorboard to $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check tensorboard >&2
  fi
}

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  [ "${1:-}" = "--test" ] && make_venv
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
[ "${1:-}" = "--test" ] && make_venv
exit 0
