"""SageMaker state changes and the pipeline's final state -> the run record, and one email per run
when the endpoint is in service or the run failed (lambdas.logic.track_progress).

The configuration is read at import, in Lambda's init phase: a missing or malformed variable
fails the cold start, naming it.
"""

import os

from lambdas.composition import track_progress_handler

handler = track_progress_handler(os.environ)
