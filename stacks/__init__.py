"""The CDK app of the MNIST product (`stacks.app_factory.create_app`): one stack, one construct
per capability. Importing this package loads nothing: the runtime never needs the CDK."""
