"""The compiled parts, both optional (without a C compiler, or libjpeg headers for the first, the install goes on):
loader/pipeline/_jpeg.c + _restart.c + _resize.c (window decode + resize, libjpeg-turbo; without it the loader uses DALI's CPU decoder)
and loader/data/_records.c (the GPU path's batch record reads; without it the same reads run in Python, slower).
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tagstream.loader.pipeline._jpeg",
            sources=["loader/pipeline/_jpeg.c", "loader/pipeline/_restart.c", "loader/pipeline/_resize.c"],
            depends=["loader/pipeline/_jpeg.h"],
            libraries=["jpeg"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "tagstream.loader.data._records",
            sources=["loader/data/_records.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
