"""S3 ObjectCreated under incoming/ -> one KFP run per dataset version (lambdas.logic.start_run);
`mnistflow verify`'s dry run (core.contracts.DRY_RUN_EVENT) -> what KFP answered, nothing started.

The configuration is read at import, in Lambda's init phase: a missing or malformed variable
fails the cold start, naming it.
"""

import os

from lambdas.composition import start_run_handler

handler = start_run_handler(os.environ)
