"""Scheduled -> the stuck-run watchdog (lambdas.logic.watchdog): closes runs that went quiet.

The configuration is read at import, in Lambda's init phase: a missing or malformed variable
fails the cold start, naming it.
"""

import os

from lambdas.composition import watchdog_handler

handler = watchdog_handler(os.environ)
