"""relaygate: a policy compiler for a campus SMTP relay.

The package is a pipeline, one module (or package) per stage:

    load -> schema -> model -> checks -> render -> write

``relaygate.pipeline`` wires the stages together; ``relaygate.cli`` is a thin
command line over it.
"""

__version__ = "0.1.0"
