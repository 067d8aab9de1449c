"""Lifecycle: what happens to records after they are approved.

* ``activity``: read the relays' Postfix logs into the activity store (SQLite);
* ``review``: the annual access retention review, joining the store with the
  inventory, with ready-to-send notices for technical contacts;
* ``edit``: revoke, retire and renew a record in place, keeping its comments
  and layout byte for byte, so the change goes through review like any other;
* ``commands``: the click commands over them (``register`` adds them to the CLI).
"""
