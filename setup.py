"""Build script: metadata lives in pyproject.toml; this file only declares the Cython twins.

* `middlebox._cwire` is the compiled twin of the pure-Python wire layer (`middlebox/wire/`),
  from `cext/_wire.pyx`; its C declarations shared with the core twin (the `Packet` fields)
  are in `middlebox/_cwire.pxd`, where Cython looks for them by module name.
* `middlebox._cnfq` is the daemon's per-packet path in C (`cext/_nfq.pyx`): it cimports
  NetfilterQueue's own declarations (`netfilterqueue/_impl.pxd`, found on sys.path, so
  NetfilterQueue must be installed to build it) and links libnetfilter_queue.
* `middlebox._cnlqueue` is the netlink backend's per-batch path in C (`cext/_nlqueue.pyx`),
  twin of `middlebox/io/nlqueue.py`; it needs no library.
* `middlebox._ccore.flow`, `.converter` and `.multipath` are the compiled twin of the core,
  compiled from the core's own sources (`middlebox/core/flow.py`, `converter.py`,
  `multipath.py`) with the C types of their augmenting `.pxd` files (aiohttp compiles its
  websocket reader this way).
  Cython takes a module's name from where its file sits, so the sources are copied to
  `build/ccore/middlebox/_ccore/` first (never into the tree); the converter imports the flow
  and multipath modules relatively, so each copy finds its own twin.

Both are required: a build without them is a broken build, so they are not marked optional.
`MIDDLEBOX_PURE_PYTHON=1` selects the pure-Python reference at run time instead.
"""
import os
import shutil

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CORE_TWIN = ("flow", "converter", "multipath")  # middlebox/core/<name>.py + .pxd -> middlebox._ccore.<name>
CORE_STAGE = os.path.join("build", "ccore")


def _stage_core_twin() -> list[Extension]:
    """Copy the core sources the twin is compiled from (only when changed, so that cythonize
    sees an up-to-date copy as up to date) and declare their extensions."""
    pkg = os.path.join(HERE, CORE_STAGE, "middlebox", "_ccore")
    os.makedirs(pkg, exist_ok=True)
    for init in (os.path.join(pkg, "..", "__init__.py"), os.path.join(pkg, "__init__.py")):
        if not os.path.exists(init):
            open(init, "w").close()
    extensions = []
    for name in CORE_TWIN:
        for ext in (".py", ".pxd"):
            src = os.path.join(HERE, "middlebox", "core", name + ext)
            dst = os.path.join(pkg, name + ext)
            if not os.path.exists(src):  # no .pxd: compiled as it is, untyped
                continue
            with open(src, "rb") as f:
                text = f.read()
            if not os.path.exists(dst) or open(dst, "rb").read() != text:
                shutil.copyfile(src, dst)
        extensions.append(Extension(
            f"middlebox._ccore.{name}",
            [os.path.join(CORE_STAGE, "middlebox", "_ccore", name + ".py")],
            extra_compile_args=["-O2"],
        ))
    return extensions


# No directive that changes what the code means. boundscheck=False, wraparound=False and
# cdivision=True trade Python's semantics for speed: a negative index no longer counts from
# the end, an index out of range reads or writes past the object (C undefined behaviour
# instead of IndexError) and % and // follow C (truncation towards zero, no
# ZeroDivisionError). The core twin is compiled from Python sources that are tested in pure
# Python, so it must mean what they mean; the wire twin reads its bytes through C pointers
# with explicit length checks (which no directive affects), so the checks cost it nothing
# measurable (bench/bench_wire.py) and stay on too. Only the annotation handling differs.

# the .pxd files give the core twin its types; annotations in the spec are documentation only
CORE_DIRECTIVES = {"annotation_typing": False, "binding": False}


def _regenerate_if_directives_changed(directives: dict, generated: list[str], stamp: str) -> None:
    """cythonize regenerates C only when a source changed, not when the directives did: drop
    the generated C when the directives differ from those it was generated with."""
    stamp = os.path.join(HERE, "build", stamp)
    text = repr(sorted(directives.items()))
    if os.path.exists(stamp) and open(stamp).read() == text:
        return
    for path in generated:
        if os.path.exists(path):
            os.remove(path)
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w") as f:
        f.write(text)


_regenerate_if_directives_changed({}, [os.path.join(HERE, "cext", "_wire.c")], "wire.directives")
_regenerate_if_directives_changed(
    CORE_DIRECTIVES,
    [os.path.join(HERE, CORE_STAGE, "middlebox", "_ccore", n + ".c") for n in CORE_TWIN],
    "ccore.directives",
)

extensions = cythonize(
    [Extension("middlebox._cwire", ["cext/_wire.pyx"], extra_compile_args=["-O2"])],
    language_level=3,
) + cythonize(
    _stage_core_twin(),
    language_level=3,
    include_path=[HERE],  # middlebox/_cwire.pxd: the wire twin's Packet, cimported by the core
    compiler_directives=CORE_DIRECTIVES,
) + cythonize(
    # Cython's default checks stay on here: it indexes what a core (maybe a faulty one) returns
    [Extension("middlebox._cnfq", ["cext/_nfq.pyx"], extra_compile_args=["-O2"],
               libraries=["netfilter_queue"]),
     # the netlink backend's per-batch path, twin of middlebox/io/nlqueue.py (no library)
     Extension("middlebox._cnlqueue", ["cext/_nlqueue.pyx"], extra_compile_args=["-O2"])],
    language_level=3,
)

setup(ext_modules=extensions)
