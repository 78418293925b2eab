"""The one compiled part: loader/_jpeg.c + _resize.c (window decode + resize, libjpeg-turbo). Optional: without a
C compiler or libjpeg headers the install goes on and the loader uses DALI's CPU decoder instead.
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tagstream.loader._jpeg",
            sources=["loader/_jpeg.c", "loader/_resize.c"],
            depends=["loader/_jpeg.h"],
            libraries=["jpeg"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
