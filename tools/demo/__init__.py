"""The end-to-end demo: synth -> convert -> vocab -> pretrain natural and sqrt -> linear probe -> report.

from tagstream.tools.demo import run_demo
"""

from tagstream.tools.demo.run import run_demo

__all__ = ["run_demo"]
