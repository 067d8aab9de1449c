"""The relay lab: the compiled policy on a real Postfix and nft, inside network namespaces.

``Lab.running(inventory, as_of)`` builds everything (see ``tests.lab.lab``),
yields the lab and always tears it down. Modules, in the order a lab is built:
``plan`` (inventory -> namespaces, addresses, accounts), ``netns`` (namespaces
and links, ownership checks), ``relay`` (private Postfix, SASL, the deploy
helper, the firewall), ``sink`` (the aiosmtpd sink, run in the relay
namespace), ``client`` (the SMTP client script, run in a client namespace),
``lab`` (the orchestrator). ``python -m tests.lab`` builds one by hand.
"""

from tests.lab.lab import Lab, Result, Session, compile_inventory, leftovers
from tests.lab.netns import LabError

__all__ = ["Lab", "LabError", "Result", "Session", "compile_inventory", "leftovers"]
