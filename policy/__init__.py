"""The learned LR policy: network, deployment (`policy.load`) and adapters."""


def load(path="pretrained", **kwargs):
    """A controller from a policy checkpoint; see `policy.deploy.load_controller`."""
    from lrpilot.policy.deploy import load_controller

    return load_controller(path, **kwargs)
