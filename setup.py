"""Package discovery (everything else is in pyproject.toml).

Every package under dit_engine/ is found, so a new subpackage lands in the wheel without a list to
update. Two packages live outside that folder under other import names (pyproject.toml's
``package-dir``: conf/ -> dit_engine.conf, adapters/ -> dit_engine_adapters); setuptools' find
cannot rename a folder, so they are named here. tests/test_packaging.py checks the result.
"""

from setuptools import find_packages, setup

#: packages whose folder is not their import path (see [tool.setuptools.package-dir])
MAPPED = {"dit_engine.conf": "conf", "dit_engine_adapters": "adapters"}


def packages() -> list[str]:
    found = find_packages(include=["dit_engine", "dit_engine.*"])
    for name, folder in MAPPED.items():  # and their subpackages, if they ever get any
        found += [name] + [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return sorted(found)


setup(packages=packages())
