"""The grammar search compiled from C (``assistant/_search.c``); everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the install still succeeds and the hub decodes with
the same search in pure Python (~20x slower; the Recognizer logs a warning, and ``hubvoice-distill bench`` says which search ran).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("assistant._search", ["assistant/_search.c"], optional=True,
                             extra_compile_args=["-O2"])])
