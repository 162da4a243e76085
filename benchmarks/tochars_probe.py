"""Would a native shortest round-trip formatter beat orjson on large float arrays? A probe.

    python benchmarks/tochars_probe.py [--repeat 9] [--min-time 0.2]

Compiles (g++, C++17, -O3) a writer of a JSON number array with ``std::to_chars`` (shortest
round-trip text, the standard's formatter; libstdc++ implements it with Ryu) into a temporary
shared library, loads it with ctypes, and times it against ``orjson.dumps(array,
option=OPT_SERIALIZE_NUMPY)`` on the same arrays, interleaved, best of --repeat loops: float64
1x10 000 (the Seldon REST reply of issue 18) and float32 1x10 000 (a V2 FP32 reply). The C++
side is a lower bound on what a codec writer would cost: one call, a preallocated buffer, no
Python objects, no layout rules (orjson's exponent and positional cut-offs), no NaN handling.
Prints microseconds per array and orjson's time over to_chars' (> 1: to_chars is faster).
"""
from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.codec import best_time  # noqa: E402

_SOURCE = r"""
#include <charconv>
#include <cstddef>
template <typename T>
static size_t write_array(const T *values, size_t n, char *out, size_t cap) {
  char *p = out, *end = out + cap;
  *p++ = '[';
  for (size_t i = 0; i < n; ++i) {
    if (i) *p++ = ',';
    p = std::to_chars(p, end, values[i]).ptr;
  }
  *p++ = ']';
  return static_cast<size_t>(p - out);
}
extern "C" size_t write_f64(const double *v, size_t n, char *out, size_t cap) { return write_array(v, n, out, cap); }
extern "C" size_t write_f32(const float *v, size_t n, char *out, size_t cap) { return write_array(v, n, out, cap); }
"""


def _library(workdir: Path) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise SystemExit("no C++ compiler (g++) on PATH")
    src, lib = workdir / "tochars.cc", workdir / "tochars.so"
    src.write_text(_SOURCE)
    subprocess.run([compiler, "-O3", "-std=c++17", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    dll = ctypes.CDLL(str(lib))
    for name in ("write_f64", "write_f32"):
        fn = getattr(dll, name)
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return dll


def run(repeat: int, min_time: float) -> list[str]:
    rng = np.random.default_rng(0)
    lines = ["times in microseconds per 1x10 000 array (best of the repeats); ratio = orjson / to_chars", ""]
    with tempfile.TemporaryDirectory() as tmp:
        dll = _library(Path(tmp))
        for dtype, fn in ((np.float64, dll.write_f64), (np.float32, dll.write_f32)):
            arr = rng.random(10_000).astype(dtype)
            out = ctypes.create_string_buffer(arr.size * 32 + 2)
            ptr = arr.ctypes.data

            def native(arr=arr, out=out, ptr=ptr, fn=fn) -> bytes:
                size = fn(ptr, arr.size, out, len(out))
                return ctypes.string_at(out, size)

            text = native()
            assert np.array_equal(np.array(orjson.loads(text), dtype=dtype), arr)  # round-trips
            t_native = best_time(native, repeat, min_time)
            t_orjson = best_time(lambda arr=arr: orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY), repeat, min_time)
            lines.append(f"{np.dtype(dtype).name:>8}: std::to_chars {t_native * 1e6:8.1f}   orjson {t_orjson * 1e6:8.1f}   "
                         f"ratio {t_orjson / t_native:5.2f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--min-time", type=float, default=0.2)
    args = parser.parse_args(argv)
    print("\n".join(run(args.repeat, args.min_time)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
