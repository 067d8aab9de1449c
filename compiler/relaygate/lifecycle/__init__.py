"""Lifecycle: what happens to records after they are approved.

* ``logs``: reading the relays' Postfix logs (files and streams, one module
  per line format, the correlation of Postfix's lines into messages);
* ``ingest``: one transaction per file into the store, years, refusals,
  de-duplication, ``forget``;
* ``store``: the activity store (SQLite): schema, coverage per relay, queries;
* ``usage``: the store seen per device (for the review and ``relaygate query``);
* ``proof``: which days every relay's logs cover, so silence is claimed only there;
* ``review``: the annual access retention review, joining the store with the
  inventory, in four output formats;
* ``notices``: ready-to-send notices for technical contacts, from a review;
* ``edit``: revoke, retire and renew a record in place, keeping its comments
  and layout byte for byte, so the change goes through review like any other;
* ``commands``: the click commands over them (``register`` adds them to the CLI).
"""
