"""Build hook: data/ ships its names list, not the script that rebuilds it (everything else is in pyproject.toml)."""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        if package == "server.embedded":  # data/ mapped in: names.txt is package data, build_names.py a dev tool
            return []
        return super().find_package_modules(package, package_dir)


setup(cmdclass={"build_py": BuildPy})
