#!/usr/bin/env bash
# Build .gpu/site.tar.xz: the Python packages galbench needs that a bare GPU machine lacks, for CPython 3.12
# on x86-64, so `python -m galbench.bench gpu` can run there without network access.
#
#   tools/gpu-bundle.sh            # here, with network access to PyPI (about 15 MB comes out)
#   # there, in a copy of this repository that carries .gpu/:
#   mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site
#   python3 -m galbench.bench gpu --out reports/benchmarks
#
# The machine is assumed to hold torch (>= 2.11), torchvision, numpy, scipy, matplotlib, rich, pillow, onnx
# and onnxruntime, as the lent H100/H200 machines do; the bundle adds astropy, GalSim and pydantic with what
# they need. Debug symbols are stripped from the extension modules (GalSim's alone is 199 MB with them, 5 MB
# without), which is why this is a tarball rather than the wheels themselves.
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
cd "$(dirname "$0")/.."
python_version=${PYTHON_VERSION:-3.12}
packages=("astropy>=6.0" "galsim>=2.5" "pydantic>=2.5")
# already on the machine: left out so that theirs, which torch was built against, stay in use
present='(numpy|packaging|pyyaml|typing_extensions|setuptools|pybind11)-'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--python-version "$python_version" --implementation cp --only-binary=:all:
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# --isolated: PyPI alone, not this machine's local indexes of Python 3.11 builds
python3 -m pip download --isolated --disable-pip-version-check --quiet "${platforms[@]}" -d "$work/wheels" "${packages[@]}"
wheels=$(ls "$work/wheels"/*.whl | grep -viE "/$present")
python3 -m pip install --isolated --disable-pip-version-check --root-user-action=ignore --quiet --no-deps --no-compile "${platforms[@]}" --target "$work/site" $wheels
find "$work/site" -name '*.so*' -type f -exec strip --strip-debug {} +
mkdir -p .gpu
tar -C "$work/site" -cJf .gpu/site.tar.xz.part .
mv .gpu/site.tar.xz.part .gpu/site.tar.xz
echo "wrote .gpu/site.tar.xz ($(du -h .gpu/site.tar.xz | cut -f1)) for CPython $python_version:"
ls "$work/site" | grep -E '\.dist-info$' | sed 's/\.dist-info$//; s/^/  /'
