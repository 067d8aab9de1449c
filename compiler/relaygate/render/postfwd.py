"""postfwd target: daily message limits as a postfwd ruleset (``postfwd/postfwd.cf``).

Postfix asks postfwd once per message (``smtpd_end_of_data_restrictions`` in
``main.cf.fragment``, so on both services). One rule per active authenticated
login, keyed by ``sasl_username``, with the login's limit (the sum of its
active records' limits, ``relaygate.limits``); then one rule that ends every
other authenticated request; then one rule per active legacy device, keyed by
``client_address`` (IPv4 or IPv6; legacy records are single hosts). Over the
limit: ``450 4.7.1`` and a text naming the device or login and its limit.
Suspended, revoked, lapsed and retired records get no rule: the Postfix maps
refuse them before DATA.

How postfwd 1.35 (Debian's ``postfwd2``) behaves, checked by running it on a
loopback port and asking it by hand, by reading its source, and in
tests/test_postfwd.py (with a real Postfix in front of it):

- Over the limit Postfix answers ``450 4.7.1 <END-OF-MESSAGE>: End-of-data
  rejected: <our text>``; the client keeps the message and retries.
- ``rate(ITEM/N/86400/ACTION)`` counts the request that creates the counter:
  with N = 3, messages 1-3 get ``DUNNO``, the 4th gets ACTION. A refused
  message is not counted, so retries do not push the window further. The
  window is fixed: it starts at the first counted message and lasts 86400
  seconds (not a calendar day, not sliding).
- The counter is keyed by the item's value (lower-cased) AND the rule's id,
  N and window: a renamed record or a changed limit starts a fresh counter.
- A rule whose ``rate()`` is not exceeded does not stop the ruleset: later
  rules still run. Hence rule 2 (``sasl_username=~.+`` -> ``DUNNO``): without
  it an authenticated message from a legacy device's address would also count
  against (and be refused by) that device's counter. With it, a login's limit
  follows the login, whatever address it connects from, and a legacy
  device's counter sees only unauthenticated mail.
- ``==`` compares whole values, case-insensitively (``SVC@EXAMPLE.EDU``
  matches ``svc@example.edu``, and counts on the same counter); an IPv6
  address matches only in Postfix's own compressed form, which is the
  canonical form relaygate writes.
- ``--keep_rates`` keeps the counters over a reload (a SIGHUP to the policy
  server, as the deploy sends; ``postfwd --reload`` signals the master, which
  leaves the port closed for seconds); a rule whose limit changed starts from
  zero, unchanged rules keep counting. ``--cache=0`` turns off the request cache, so no answer is
  ever a cached one (rate rules were still counted with the default 600 s
  cache in our runs, but nothing in the manual promises it). Run postfwd with
  both flags.
- ``postfwd -C -f FILE`` prints the parsed rules (one ``Rule N: id->...``
  line each) and a warning for each line it ignores; it exits 1 even for a
  good file, so a check compares the rules it printed, not its status.

Every value is re-checked before it is written (``guards``); the action words,
the reply code and the window are constants here, never data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relaygate.errors import RenderRefused
from relaygate.policy import Policy
from relaygate.render import Artifacts, Header, guards, render_template, target

ARTIFACT = "postfwd/postfwd.cf"
#: The request state postfwd is asked in (smtpd_end_of_data_restrictions): once per message.
STATE = "END-OF-MESSAGE"
RATE = "rate"
DUNNO = "DUNNO"
#: Over the limit: a temporary refusal (the device's MTA retries later).
OVER = "450 4.7.1"
WINDOW = 86400
AUTHENTICATED_ID = "relaygate-authenticated"
#: What the emitted reply text and keys may contain: none of postfwd's separators
#: (``;`` items, ``,`` lists, ``(``/``)`` the action's argument, ``$$`` variables, ``#``).
_SAFE_TEXT = re.compile(r"[A-Za-z0-9 .@+:_-]+")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    key: str
    limit: int
    text: str


def _checked(rule: Rule) -> Rule:
    for value in (rule.id, rule.key, rule.text):
        if not _SAFE_TEXT.fullmatch(value):
            raise RenderRefused(f"refusing to render postfwd value {value!r}")
    if not (isinstance(rule.limit, int) and rule.limit >= 1):
        raise RenderRefused(f"refusing to render postfwd limit {rule.limit!r}")
    return rule


def login_rules(policy: Policy) -> list[Rule]:
    """One rule per active login, by login."""
    rules = []
    for login, limit in policy.login_limits.items():
        key = guards.mail(login)
        names = " ".join(guards.name(n) for n in limit.names)
        text = f"login {key} of {names} reached its limit of {limit.per_day} messages per day"
        rules.append(_checked(Rule(f"login-{key}", key, limit.per_day, text)))
    return rules


def legacy_rules(policy: Policy) -> list[Rule]:
    """One rule per active legacy device (a single host), by address."""
    rules = []
    for client in policy.legacy:
        if not client.network.size == 1:
            raise RenderRefused(f"legacy device {client.name} is not a single host")
        name = guards.name(client.name)
        key = guards.address(client.address)
        per_day = client.limit.per_day
        text = f"device {name} reached its limit of {per_day} messages per day"
        rules.append(_checked(Rule(f"legacy-{name}", key, per_day, text)))
    return rules


@target("postfwd")
def render(policy: Policy, header: Header) -> Artifacts:
    text = render_template(
        "postfwd/postfwd.cf.j2",
        header=header.lines("#"),
        port=int(policy.site.volume_limits.port),
        logins=login_rules(policy),
        legacy=legacy_rules(policy),
        authenticated_id=AUTHENTICATED_ID,
        state=STATE,
        rate=RATE,
        dunno=DUNNO,
        over=OVER,
        window=WINDOW,
    )
    return {ARTIFACT: text}


# --- reading it back (the verifier) -----------------------------------------------------

_LINE = re.compile(
    r"id=(?P<id>[^;]+); protocol_state==(?P<state>[^;]+); (?P<item>sasl_username|client_address)"
    r"(?P<op>==|=~)(?P<key>[^;]+); action=(?P<action>.+)"
)
_RATE = re.compile(
    r"rate\((?P<item>[a-z_]+)/(?P<limit>[0-9]+)/(?P<window>[0-9]+)/(?P<reply>[^()]+)\)"
)


@dataclass(frozen=True, slots=True)
class ReadRule:
    """One rule of a postfwd.cf as read back: which item, which key, which limit."""

    number: int
    id: str
    item: str
    key: str
    limit: int | None  # None: the rule answers DUNNO (the authenticated stop)


def read_rules(text: str, problems: list[str]) -> list[ReadRule]:
    """Every rule of ``text``, in order; a line of another shape is a problem."""
    rules = []
    over_reply = f"{OVER} "
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None or match["state"] != STATE:
            problems.append(f"{ARTIFACT}:{number}: not a rule relaygate writes: {line!r}")
            continue
        rule_id, item, op, key, action = match.group("id", "item", "op", "key", "action")
        if op == "=~":
            ok = (item, key, action) == ("sasl_username", ".+", DUNNO)
            if not ok or rule_id != AUTHENTICATED_ID:
                problems.append(f"{ARTIFACT}:{number}: unexpected match rule {line!r}")
                continue
            rules.append(ReadRule(number, rule_id, item, key, None))
            continue
        rate = _RATE.fullmatch(action)
        if (
            rate is None
            or rate["item"] != item
            or int(rate["window"]) != WINDOW
            or not rate["reply"].startswith(over_reply)
        ):
            problems.append(f"{ARTIFACT}:{number}: not a daily rate limit with {OVER}: {line!r}")
            continue
        rules.append(ReadRule(number, rule_id, item, key, int(rate["limit"])))
    return rules


def check(text: str, logins: dict[str, int], legacy: dict[str, int]) -> list[str]:
    """Problems of a postfwd.cf against the limits the records give.

    ``logins``: login -> its limit; ``legacy``: canonical address -> its limit.
    Each must have exactly one rule with that limit, every login rule before
    the authenticated stop, every legacy rule after it, and nothing else.
    """
    problems: list[str] = []
    rules = read_rules(text, problems)
    stops = [r.number for r in rules if r.limit is None]
    if len(stops) != 1:
        problems.append(f"{ARTIFACT}: {len(stops)} authenticated stop rules, expected 1")
    stop = stops[0] if stops else 0
    seen: dict[tuple[str, str], int] = {}
    for rule in rules:
        if rule.limit is None:
            continue
        login = rule.item == "sasl_username"
        if login != (rule.number < stop):
            problems.append(
                f"{ARTIFACT}:{rule.number}: {rule.item} rule on the wrong side of the stop"
            )
        if (rule.item, rule.key) in seen:
            problems.append(f"{ARTIFACT}:{rule.number}: a second rule for {rule.key}")
        seen[(rule.item, rule.key)] = rule.limit
    want = {("sasl_username", k): v for k, v in logins.items()}
    want |= {("client_address", k): v for k, v in legacy.items()}
    # Only the keys with a problem, in sorted order (sorting every key cost more than the rest).
    differ = seen.keys() ^ want.keys()
    differ |= {key for key, limit in seen.items() if key in want and want[key] != limit}
    for key in sorted(differ):
        if key not in want:
            problems.append(f"{ARTIFACT}: {key[1]} has a limit but no active record grants it")
        elif key not in seen:
            problems.append(f"{ARTIFACT}: {key[1]} has no limit rule")
        elif seen[key] != want[key]:
            problems.append(
                f"{ARTIFACT}: {key[1]} is limited to {seen[key]} a day, the records say {want[key]}"
            )
    return problems
