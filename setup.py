"""Build hook for the optional C accelerator (``wsgiws/_speedups.c``).

Everything else lives in pyproject.toml. The extension is optional: without a
C compiler (or with ``WSGIWS_NO_EXTENSIONS=1``) ``pip install .`` still
succeeds and wsgiws uses its pure-Python code. In a checkout,
``python setup.py build_ext --inplace`` builds it next to the sources.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("WSGIWS_NO_EXTENSIONS", "") in ("", "0"):
    ext_modules.append(
        Extension(
            "wsgiws._speedups",
            sources=["wsgiws/_speedups.c"],
            optional=True,  # a failed build is a warning, not an error
            extra_compile_args=["-O3"] if os.name == "posix" else [],
        )
    )

setup(ext_modules=ext_modules)
