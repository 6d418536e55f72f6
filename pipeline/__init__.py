"""The KFP pipeline (`mnist_pipeline`), its components and compiler; `steps/` is what they run."""
