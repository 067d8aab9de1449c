"""The catalogue of rules: every check relaygate makes, with a stable id.

Ids are public: CI annotations, SARIF and users' suppress lists refer to them,
so an id is never renamed or reused. ``relaygate rules`` prints this table.
"""

from __future__ import annotations

from relaygate.findings import Rule, Severity

E = Severity.ERROR
W = Severity.WARNING

_ALL: list[Rule] = [
    # --- files and YAML ---------------------------------------------------
    Rule(
        "file.missing",
        E,
        "a required inventory file is missing",
        "create it; see docs/inventory-format.md",
    ),
    Rule(
        "file.unreadable",
        E,
        "the file cannot be read",
        "check that it is a regular file you can read",
    ),
    Rule(
        "file.not-regular",
        E,
        "a symlink, directory or special file where a record belongs",
        "replace it with a regular .yaml file; links are refused so reviewers see what is read",
    ),
    Rule(
        "file.misplaced",
        E,
        "a file or folder under devices/ that is not devices/<unit>/<name>.yaml",
        "move it to devices/<unit>/<name>.yaml or delete it",
    ),
    Rule(
        "file.too-large",
        E,
        "the file is larger than the size cap",
        "split it up; records are small, a huge file is a mistake or an attack",
    ),
    Rule("file.not-utf8", E, "the file is not valid UTF-8", "save the file as UTF-8"),
    Rule(
        "file.byte-order-mark",
        E,
        "the file starts with a byte-order mark",
        "save the file as UTF-8 without BOM",
    ),
    Rule(
        "file.line-endings",
        E,
        "the file contains carriage returns",
        "use Unix line endings (LF only)",
    ),
    Rule(
        "file.forbidden-character",
        E,
        "a control, bidirectional or invisible character in the file",
        "delete it; such characters make a reviewer see something other than what is read",
    ),
    Rule(
        "yaml.syntax", E, "the file is not valid YAML", "fix the YAML syntax at the position shown"
    ),
    Rule(
        "yaml.multiple-documents",
        E,
        "more than one YAML document in a file",
        "keep one document per file; remove the extra '---'",
    ),
    Rule(
        "yaml.not-mapping",
        E,
        "the top level of the file is not a mapping",
        "the file must be a mapping of field: value",
    ),
    Rule(
        "yaml.duplicate-key",
        E,
        "a key appears twice in one mapping",
        "keep one of them; YAML silently keeps only the last",
    ),
    Rule(
        "yaml.anchor",
        E,
        "a YAML anchor (&name)",
        "write the value out; anchors hide what a record really contains",
    ),
    Rule(
        "yaml.alias",
        E,
        "a YAML alias (*name)",
        "write the value out; aliases hide what a record really contains",
    ),
    Rule(
        "yaml.merge-key",
        E,
        "a YAML merge key (<<)",
        "write the fields out; merge keys hide what a record really contains",
    ),
    Rule(
        "yaml.tag",
        E,
        "an explicit YAML tag (!tag or !!type)",
        "remove the tag; quote the value if it must be a string",
    ),
    Rule(
        "yaml.too-deep",
        E,
        "lists and mappings nested deeper than any inventory file needs",
        "flatten the value; records are a few levels deep",
    ),
    Rule(
        "yaml.non-string-key",
        E,
        "a mapping key that is not a plain string",
        "use a plain field name as the key",
    ),
    Rule(
        "yaml.ambiguous-scalar",
        E,
        "a plain value that YAML 1.1 reads differently than a person does",
        "quote it if you mean text, or write true/false or a plain decimal number",
    ),
    # --- schema -------------------------------------------------------------
    Rule(
        "schema.required",
        E,
        "a required field is missing",
        "add the field; see the schema or docs/inventory-format.md",
    ),
    Rule(
        "schema.unknown-field",
        E,
        "a field the schema does not know",
        "remove it or fix its spelling",
    ),
    Rule(
        "schema.type",
        E,
        "a value of the wrong type",
        "quote text values; write numbers without quotes",
    ),
    Rule("schema.enum", E, "a value outside the allowed set", "use one of the listed values"),
    Rule(
        "schema.format",
        E,
        "a value in the wrong format",
        "write it in the form the schema describes",
    ),
    Rule(
        "schema.pattern",
        E,
        "a value that does not match the required pattern",
        "write it in the form the schema describes (lower-case, no spaces)",
    ),
    Rule("schema.length", E, "a text value too short or too long", "shorten or complete the value"),
    Rule(
        "schema.items",
        E,
        "a list with too few, too many or repeated items",
        "fix the list as the message says",
    ),
    Rule("schema.range", E, "a number out of range", "use a value inside the range"),
    # --- site, units, netreg ----------------------------------------------------
    Rule(
        "site.prefix-not-canonical",
        E,
        "a site prefix with host bits set or not in canonical form",
        "write the network address in canonical form",
    ),
    Rule(
        "site.mod-outside-campus",
        E,
        "a MOD segment prefix outside every campus network",
        "fix the prefix or add the campus network",
    ),
    Rule(
        "site.overlapping-segments",
        E,
        "two MOD segments overlap",
        "each address belongs to exactly one MOD segment",
    ),
    Rule(
        "site.duplicate-vlan",
        E,
        "two MOD segments share a VLAN id",
        "give each segment its own VLAN",
    ),
    Rule(
        "site.duplicate-port",
        E,
        "the relay and submission ports are the same",
        "use 25 for the relay port and 587 for submission",
    ),
    Rule(
        "site.duplicate-name",
        E,
        "two segments, networks or relay hosts share a name",
        "give each its own name",
    ),
    Rule(
        "site.relay-in-mod",
        E,
        "a relay host address inside a MOD segment",
        "relay hosts live outside the device segments",
    ),
    Rule(
        "netreg.duplicate-address",
        E,
        "two NetReg reservations for one address",
        "the export must hold one reservation per address; re-export NetReg",
    ),
    Rule(
        "netreg.not-canonical",
        E,
        "a NetReg address not in canonical form",
        "re-export NetReg or write the address as shown",
    ),
    Rule(
        "netreg.missing-mac",
        E,
        "a static-dhcp reservation without a MAC address",
        "static-DHCP reservations are bound to a MAC; re-export NetReg",
    ),
    Rule(
        "units.duplicate-approver",
        E,
        "an approver listed twice in one unit",
        "list each approver once",
    ),
    # --- identity ---------------------------------------------------------------
    Rule(
        "identity.name-mismatch",
        E,
        "name differs from the file name",
        "rename the file or fix name so they are equal",
    ),
    Rule(
        "identity.unit-mismatch",
        E,
        "unit differs from the folder",
        "move the file to devices/<unit>/ or fix unit",
    ),
    Rule(
        "identity.unit-undeclared",
        E,
        "the unit is not declared in units.yaml",
        "declare the unit in units.yaml (with its approvers) or fix the unit",
    ),
    Rule(
        "identity.duplicate-name",
        E,
        "two records with the same name",
        "names are unique across all units; choose another name",
    ),
    Rule(
        "identity.duplicate-address",
        E,
        "two records with the same address",
        "one device per address; remove or fix one of them",
    ),
    Rule("identity.duplicate-fqdn", E, "two records with the same FQDN", "one record per FQDN"),
    Rule(
        "identity.overlapping-prefix",
        E,
        "an address inside another record's prefix",
        "addresses and prefixes may not overlap; narrow the prefix or fix the address",
    ),
    # --- addressing --------------------------------------------------------------
    Rule(
        "address.invalid",
        E,
        "not an IP address or prefix",
        "write an IPv4 or IPv6 address, or a prefix like 10.1.2.16/28",
    ),
    Rule(
        "address.not-canonical",
        E,
        "the address is not in canonical form",
        "write the spelling the message shows (no leading zeros or host bits, compressed IPv6)",
    ),
    Rule(
        "address.special",
        E,
        "a loopback, link-local, multicast, unspecified or reserved address",
        "use the device's real campus address",
    ),
    Rule(
        "address.outside-campus",
        E,
        "the address is outside every campus network",
        "use the device's campus address; off-campus hosts cannot use the relay",
    ),
    Rule(
        "address.relay-host",
        E,
        "the address overlaps a relay host",
        "a device cannot have the relay's own address",
    ),
    Rule(
        "address.no-relay-address",
        E,
        "no relay host has an address of the device's IP version",
        "give the relay hosts an address of that version in site.yaml, or use the other one",
    ),
    Rule(
        "address.prefix-not-allowed",
        E,
        "a copier, MFD, scanner or appliance given a prefix",
        "give the single host address of the device",
    ),
    Rule(
        "address.prefix-too-broad",
        E,
        "a prefix broader than the site limit",
        "narrow the prefix to policy.shortest_prefix or list hosts separately",
    ),
    # --- legacy access -------------------------------------------------------
    Rule(
        "legacy.exception-missing",
        E,
        "a legacy (ip/none) device without an exception",
        "add an exception (approver, justification, acknowledgments) or use oauth2/credentials",
    ),
    Rule(
        "legacy.acknowledgment-missing",
        E,
        "an acknowledgment the procedure requires is missing",
        "the approver must acknowledge all three statements",
    ),
    Rule(
        "legacy.justification-too-short",
        E,
        "the business justification is too short",
        "explain why the device cannot authenticate and when it will be replaced",
    ),
    Rule(
        "legacy.approver-not-listed",
        W,
        "the approver is not an approver of the device's unit (the relay refuses the device)",
        "ask an approver listed for the unit in units.yaml, or add them there in a separate review;"
        " a change to this record fails until then",
    ),
    Rule(
        "legacy.approver-mismatch",
        W,
        "the approver's name or role differs from units.yaml (the relay refuses the device)",
        "copy the approver exactly as units.yaml lists them; a change to this record fails until"
        " then",
    ),
    Rule(
        "legacy.outside-mod",
        E,
        "a legacy device outside every MOD segment",
        "open a Network Services ticket to move the device into a MOD segment first",
    ),
    Rule(
        "legacy.mod-ticket-missing",
        E,
        "no mod_ticket for a legacy device",
        "add exception.mod_ticket: the ticket that placed the device in the MOD network",
    ),
    Rule(
        "legacy.netreg-missing",
        E,
        "no netreg type for a legacy device",
        "set netreg: static or static-dhcp as registered in NetReg",
    ),
    Rule(
        "legacy.netreg-no-reservation",
        W,
        "no NetReg reservation for the address (the relay refuses the device)",
        "register a static or static-DHCP reservation in NetReg, then refresh netreg.yaml;"
        " a change to this record fails until then",
    ),
    Rule(
        "legacy.netreg-mismatch",
        W,
        "the NetReg reservation differs from the record (the relay refuses the device)",
        "make the record's fqdn and netreg type match NetReg; a change to this record fails"
        " until then",
    ),
    # --- exception dates ------------------------------------------------------
    Rule(
        "exception.approved-in-future",
        E,
        "approved_on is after the as-of date",
        "an exception is recorded after it was approved",
    ),
    Rule(
        "exception.expires-before-approval",
        E,
        "expires_on is not after approved_on",
        "fix the dates",
    ),
    Rule(
        "exception.expired",
        W,
        "the exception has expired (the relay refuses the device)",
        "renew it (relaygate renew) with a new approval, or retire the device; a change to this"
        " record fails until then",
    ),
    Rule(
        "exception.term-too-long",
        E,
        "the exception runs longer than the site's maximum term",
        "shorten expires_on to at most policy.max_exception_days after approved_on",
    ),
    Rule(
        "exception.expires-soon",
        W,
        "the exception expires inside the warning window",
        "ask the approver to renew it before it expires",
    ),
    # --- authenticated access ---------------------------------------------------
    Rule(
        "auth.account-missing",
        E,
        "an authenticated device without an account",
        "add account: the SASL/OAuth2 login of the device",
    ),
    Rule(
        "auth.exception-forbidden",
        E,
        "an authenticated device with an exception block",
        "remove the exception; only ip/none devices need one",
    ),
    Rule(
        "auth.account-on-legacy",
        E,
        "a legacy device with an account",
        "remove account, or switch auth to oauth2/credentials",
    ),
    Rule(
        "auth.shared-account",
        E,
        "two devices share one account",
        "give each device its own account so none can send as another",
    ),
    # --- senders ---------------------------------------------------------------------
    Rule(
        "sender.domain-not-allowed",
        E,
        "the sender's domain is not an allowed sender domain",
        "use an address in one of site.yaml sender_domains",
    ),
    Rule(
        "sender.claimed-by-account",
        E,
        "a legacy device uses a sender of an authenticated account",
        "legacy devices may not send as an authenticated account's addresses; use another sender",
    ),
    # --- status ----------------------------------------------------------------------
    Rule(
        "status.reason-missing",
        E,
        "a suspended, revoked or retired record without status_reason",
        "add status_reason",
    ),
    Rule(
        "status.date-missing",
        E,
        "a suspended, revoked or retired record without status_date",
        "add status_date: the day the status changed",
    ),
    Rule(
        "status.date-in-future",
        E,
        "status_date is after the as-of date",
        "use the day the status changed",
    ),
    Rule(
        "status.stale-fields",
        E,
        "an active record still carries status_reason or status_date",
        "remove them when reactivating, and say why in the pull request",
    ),
    # --- text ----------------------------------------------------------------------------
    Rule(
        "text.forbidden-character",
        E,
        "a control, bidirectional or invisible character in a value",
        "delete it; such characters make a reviewer see something other than what is read",
    ),
    Rule(
        "text.surrounding-whitespace",
        E,
        "a value with leading or trailing whitespace",
        "remove the whitespace",
    ),
    Rule(
        "text.non-ascii",
        E,
        "a non-ASCII character where only ASCII is allowed",
        "write the domain in ASCII (punycode); look-alike letters deceive reviewers",
    ),
    # --- a policy repository and its imports ------------------------------------------------
    Rule(
        "schemas.stale",
        W,
        "a schema file beside the inventory is not the installed relaygate's",
        "run `relaygate schemas export schemas` so editor completion matches what validate checks",
    ),
    Rule(
        "import.unknown-column",
        E,
        "a CSV column that names no record field",
        "rename the column to a record field (nested fields with dots, e.g. requestor.email)",
    ),
    Rule(
        "import.missing-column",
        E,
        "a CSV export without a column every row needs",
        "add the column (name and unit name each record's file)",
    ),
    Rule(
        "import.duplicate-column",
        E,
        "two CSV columns with the same name",
        "keep one of them",
    ),
    Rule(
        "import.bad-value",
        E,
        "a CSV cell that cannot become the field it is in",
        "write the value as the field expects (see docs/inventory-format.md)",
    ),
    Rule(
        "import.duplicate-row",
        E,
        "two CSV rows for the same record, or a row for a record that exists",
        "keep one row per record; change an existing record by editing its file",
    ),
    Rule(
        "import.mass-removal",
        E,
        "a NetReg export that drops more reservations than the site's mass-change share",
        "check the export is complete; if the reservations really went, repeat with"
        " --allow-removals",
    ),
    Rule(
        "import.ragged-row",
        E,
        "a CSV row with more or fewer cells than the header",
        "fix the row's quoting or its number of cells",
    ),
    # --- sender ownership, unit sender domains, site sanity, legacy hosts ------------
    Rule(
        "sender.owned-by-another",
        E,
        "a sender address another live (active, suspended or revoked) record already uses",
        "use a sender of your own; if both records really share it, each names the other in"
        " shares_senders_with",
    ),
    Rule(
        "sender.share-not-mutual",
        E,
        "shares_senders_with names a record that does not name this one back, or no live record",
        "both records must list each other in shares_senders_with, reviewed by both units",
    ),
    Rule(
        "sender.share-unused",
        E,
        "shares_senders_with names a record that shares no sender with this one",
        "remove the name: a standing share would let that record take a sender unreviewed",
    ),
    Rule(
        "sender.domain-not-in-unit",
        E,
        "the sender's domain is not one of the unit's sender_domains (units.yaml)",
        "use an address in one of the unit's sender_domains, or ask the platform team to add"
        " the domain to the unit",
    ),
    Rule(
        "units.sender-domain-not-allowed",
        E,
        "a unit's sender domain that is not in site.yaml sender_domains",
        "add the domain to site.yaml sender_domains first, or remove it from the unit",
    ),
    Rule(
        "site.campus-too-broad",
        E,
        "a campus network broader than policy.broadest_campus_prefix",
        "list the campus's own allocations; the submission port is open to every campus address",
    ),
    Rule(
        "site.overlapping-campus",
        E,
        "two campus networks overlap (nft refuses the ruleset: conflicting intervals)",
        "remove the smaller network or the duplicate; each address is in one campus network",
    ),
    Rule(
        "legacy.prefix-not-allowed",
        E,
        "a legacy (ip/none) record with a prefix instead of a single host",
        "give the one host address NetReg reserves for the device (one record per host), or"
        " switch to oauth2/credentials, where an application or server may give a prefix",
    ),
    # --- volume limits (docs/limits.md) -------------------------------------------------
    Rule(
        "limit.justification-too-short",
        E,
        "a volume_limit override whose justification is too short to review",
        "say why the computed limit (volume_per_day x factor, at least the floor) does not fit;"
        " at least policy.min_justification_chars characters and 5 distinct words",
    ),
    Rule(
        "limit.override-too-high",
        E,
        "a volume_limit.per_day above the site's volume_limits.max_per_day",
        "lower it, or have the platform team raise volume_limits.max_per_day in site.yaml",
    ),
    Rule(
        "limit.override-below-estimate",
        W,
        "a volume_limit.per_day below the record's own volume_per_day estimate",
        "the relay would refuse part of the mail the record says it sends: raise per_day or"
        " correct volume_per_day",
    ),
    Rule(
        "limit.port-in-use",
        E,
        "volume_limits.port is the relay or submission port",
        "pick a free local port for postfwd (the default is 10040)",
    ),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _ALL}
if len(RULES) != len(_ALL):  # pragma: no cover - guards the table itself
    raise RuntimeError("duplicate rule id in relaygate.rules")


def rule(rule_id: str) -> Rule:
    """The rule with this id; an unknown id is a bug in relaygate, never in data."""
    return RULES[rule_id]
