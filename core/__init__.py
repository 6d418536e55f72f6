"""The shared core: the contracts every part reads (names, statuses, notification kinds, the
SageMaker event table, the run record, the settings and run parameters). Standard library only;
no deployable owns it: the Lambda asset ships it and the pipeline's components embed it as is."""
