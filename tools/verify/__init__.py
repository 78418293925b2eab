"""`tagstream verify`: checksums, sizes, index arrays and every record of a dataset, as a list of problems.

from tagstream.tools.verify import verify
"""

from tagstream.tools.verify.checks import Problem, VerifyReport, verify

__all__ = ["Problem", "VerifyReport", "verify"]
