"""The CDK app of the MNIST product (`stacks.app_factory.create_app`).

Kept free of imports: the local stack reads `stacks.names`, `stacks.settings` and
`stacks.lambda_environment` without loading the CDK.
"""
