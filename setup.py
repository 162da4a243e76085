"""Builds fastseldon's native codec: the Cython/C++ modules of _fast/.

Everything else about the package (name, version, dependencies, scripts, package data) is
declared in pyproject.toml; this file only adds the extension modules and the command that
builds them.

- The codec is built when Cython, numpy and a C/C++ compiler are present; without them, or
  with FASTSELDON_NO_EXT=1, the package installs with its pure-Python reference codec (same
  results, slower). A compiler error never fails the install.
- Every translation unit is compiled at once, one compiler per CPU (`build_ext -j N`, or
  FASTSELDON_BUILD_JOBS, overrides the count). The simdjson amalgamation alone is about
  half of the work, so it starts first.
- Debug information is left out (`-g0` after Python's CFLAGS, which carry `-g`): it halves
  the compile time and does not change the generated code. Put `-g` in CFLAGS to keep it.
- Each step says on stderr what it compiles and how long it took. pip shows a build's
  output only with `pip install -v`, so under pip these lines go to the terminal instead,
  when there is one (FASTSELDON_BUILD_LOG=stderr keeps them on stderr).
"""
from __future__ import annotations

import glob
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.modified import newer_group
except ImportError:  # setuptools < 69
    from distutils.dep_util import newer_group  # type: ignore[no-redef]

# sources that take far longer than their size suggests: compile them first
_SLOW_SOURCES = ("simdjson_unity.cc",)  # #includes the whole simdjson amalgamation: about half the work
_COMPILER_DIRECTIVES = {"boundscheck": False, "wraparound": False}

_log_lock = threading.Lock()
_log_stream = None
_said = False


def _log_target():
    """stderr; but the terminal, when there is one, while pip runs this build: pip shows a
    build's stderr only with -v (PIP_BUILD_TRACKER is pip's, set for every build it runs)."""
    global _log_stream
    if _log_stream is None:
        _log_stream = sys.stderr
        if ("PIP_BUILD_TRACKER" in os.environ and not sys.stderr.isatty()
                and os.environ.get("FASTSELDON_BUILD_LOG") != "stderr"):
            try:
                _log_stream = open("/dev/tty", "w", buffering=1, encoding="utf-8")  # noqa: SIM115
            except OSError:  # no controlling terminal: CI, a docker build, a background job
                pass
    return _log_stream


def say(message: str) -> None:
    global _said
    with _log_lock:
        stream = _log_target()
        if stream is sys.stderr:
            print(f"fastseldon: {message}", file=stream, flush=True)
        else:  # first below pip's "Building wheel ... -" line, then over its spinner character
            lead = "\r\033[K" if _said else "\n"
            print(f"{lead}  fastseldon: {message}", file=stream, flush=True)
        _said = True


def _jobs(requested) -> int:
    if os.environ.get("FASTSELDON_BUILD_JOBS", "").isdigit():
        return max(1, int(os.environ["FASTSELDON_BUILD_JOBS"]))
    if requested and requested is not True:
        return max(1, int(requested))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class BuildNativeCodec(build_ext):
    """Cythonizes, compiles every source in parallel, links; never fails the install."""

    def run(self) -> None:
        try:
            self._cythonize()
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler problem means "use the fallback"
            say(f"native codec not built ({exc}); using the pure-Python codec")

    def _cythonize(self) -> None:
        """.pyx to C/C++ here, when building: pip runs setup.py three times (requirements,
        metadata, build) and egg_info's manifest finalizes this command too, but only the
        build needs the C sources."""
        exts = [ext for ext in self.extensions if any(src.endswith(".pyx") for src in ext.sources)]
        if not exts:
            return
        from Cython.Build import cythonize

        start = time.monotonic()
        # --force regenerates the C/C++ too: sources cythonized by another environment (pip's
        # isolated build, with a newer numpy's .pxd) need not compile against this one's headers
        out = cythonize(exts, language_level=3, compiler_directives=_COMPILER_DIRECTIVES,
                        nthreads=min(len(exts), _jobs(self.parallel)), quiet=True, force=bool(self.force))
        # In place: finalize_options annotated these objects (setuptools' _full_name, ...),
        # and the build keeps using them.
        for ext, generated in zip(exts, out):
            assert ext.name == generated.name, (ext.name, generated.name)
            vars(ext).update(vars(generated))
        say(f"cythonized {', '.join(ext.name for ext in exts)} in {time.monotonic() - start:.1f} s")

    # -- compile every translation unit of every extension at once; link each extension as
    # soon as its last object is done
    def build_extensions(self) -> None:
        self.check_extensions_list(self.extensions)
        todo = [ext for ext in self.extensions if self._out_of_date(ext)]
        if not todo:
            return
        jobs = _jobs(self.parallel)
        units = [(ext, src) for ext in todo for src in ext.sources]
        units.sort(key=lambda unit: (not unit[1].endswith(_SLOW_SOURCES), -os.path.getsize(unit[1])))
        say(f"compiling the native codec, {min(jobs, len(units))} sources at a time "
            f"(about 40 s on 2 cores): "
            + "; ".join(f"{ext.name} from {', '.join(os.path.basename(s) for s in ext.sources)}" for ext in todo))
        start = time.monotonic()
        self._compile = self.compiler.compile  # _link swaps self.compiler.compile while others compile
        pending = {ext.name: len(ext.sources) for ext in todo}
        objects: dict[str, list[str]] = {ext.name: [] for ext in todo}
        took: dict[str, list[str]] = {ext.name: [] for ext in todo}
        errors: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(self._compile_unit, ext, src): (ext, src) for ext, src in units}
            for future in as_completed(futures):
                ext, src = futures[future]
                try:
                    objs, seconds = future.result()
                except Exception as exc:  # noqa: BLE001 - reported, and the extension skipped
                    errors.setdefault(ext.name, f"{os.path.basename(src)}: {exc}")
                else:
                    objects[ext.name] += objs
                    took[ext.name].append(f"{os.path.basename(src)} {seconds:.1f} s")
                pending[ext.name] -= 1
                if pending[ext.name] == 0:
                    self._finish(ext, sorted(objects[ext.name]), took[ext.name], errors.get(ext.name), start)
        if len(errors) == len(todo):
            say("native codec not built; using the pure-Python codec")
        else:
            say(f"native codec built in {time.monotonic() - start:.1f} s"
                + (f", without {len(errors)} of its {len(todo)} modules" if errors else ""))

    def _finish(self, ext, objs: list[str], took: list[str], error: str | None, start: float) -> None:
        if error is None:
            link_start = time.monotonic()
            try:
                self._link(ext, objs)
            except Exception as exc:  # noqa: BLE001
                error = f"link: {exc}"
            else:
                took.append(f"link {time.monotonic() - link_start:.1f} s")
                say(f"built {ext.name} in {time.monotonic() - start:.1f} s ({', '.join(took)})")
                return
        say(f"{ext.name} not built ({error}); the pure-Python codec stands in for it")

    def _out_of_date(self, ext) -> bool:
        return bool(self.force or newer_group(list(ext.sources) + list(ext.depends),
                                              self.get_ext_fullpath(ext.name), "newer"))

    def _compile_unit(self, ext, src: str) -> tuple[list[str], float]:
        """One source to its object file, with the arguments build_ext.build_extension uses."""
        start = time.monotonic()
        macros = list(ext.define_macros) + [(undef,) for undef in ext.undef_macros]
        objs = self._compile([src], output_dir=self.build_temp, macros=macros,
                             include_dirs=ext.include_dirs, debug=self.debug,
                             extra_postargs=ext.extra_compile_args or [], depends=ext.depends)
        return objs, time.monotonic() - start

    def _link(self, ext, objs: list[str]) -> None:
        """build_ext.build_extension with its compile step answered by the objects built above."""
        compile_ = self.compiler.compile
        self.compiler.compile = lambda sources, *args, **kwargs: list(objs)
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile_


def _extensions() -> list:
    sources = sorted(glob.glob("_fast/*.pyx"))
    if not sources or os.environ.get("FASTSELDON_NO_EXT") == "1":
        return []
    try:
        import Cython  # noqa: F401 - cythonized in BuildNativeCodec
        import numpy
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
    compile_args = ["-O3"]
    if os.name == "posix" and "-g" not in os.environ.get("CFLAGS", "").split():
        compile_args.append("-g0")
    # the non-Cython inputs (headers, the simdjson unity file the .pyx names): rebuild when
    # they change, and ship them in an sdist
    depends = sorted(glob.glob("_fast/*.h") + glob.glob("_fast/*.cc"))
    return [
        Extension(
            f"fastseldon._fast.{os.path.splitext(os.path.basename(src))[0]}",
            [src],
            include_dirs=include_dirs,
            extra_compile_args=compile_args,
            # built against numpy 2 headers, loadable on numpy >= 1.24 (numpy 2's C API is
            # backward compatible down to the target version)
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_24_API_VERSION")],
            depends=depends,
        )
        for src in sources
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNativeCodec})
