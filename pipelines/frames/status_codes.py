"""Reading bounce texts: the RFC 3463 enhanced status code (``5.1.1``) in a provider's
smtp_status or reason, CMC's own status numbers mapped to the code they document
(:data:`CMC_STATUS_CODE`), and what a code means. No frames, no warehouse."""

from __future__ import annotations

import re

#: RFC 3463 enhanced status code: class.subject.detail (class 2, 4 or 5).
ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
#: What the common subject.detail pairs mean (RFC 3463, RFC 7372 for X.7.2x).
CODE_MEANING = {
    "0.0": "other undefined status",
    "1.0": "other address status",
    "1.1": "bad destination mailbox (no such user)",
    "1.2": "bad destination system (no such domain)",
    "1.3": "bad destination mailbox address syntax",
    "1.6": "mailbox has moved",
    "2.0": "other or undefined mailbox status",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full",
    "2.3": "message length exceeds administrative limit",
    "3.0": "other or undefined mail system status",
    "3.4": "message too big for system",
    "4.0": "other network or routing status",
    "4.1": "no answer from host",
    "4.4": "unable to route",
    "4.7": "delivery time expired",
    "5.0": "other protocol status",
    "7.0": "other security status",
    "7.1": "delivery not authorized, message refused (policy, blocklist)",
    "7.25": "reverse DNS validation failed",
    "7.26": "multiple authentication checks failed",
}
#: The row of bounces whose provider gave no enhanced status code.
NO_CODE = "(no code)"


def enhanced_status_code(*texts: str | None) -> str | None:
    """The first RFC 3463 code (``5.1.1``) in ``texts`` (e.g. smtp_status, then reason):
    ``'550 5.1.1 user unknown'`` -> ``'5.1.1'``; CMC's own status numbers (``'2'``) and
    texts without a code -> None."""
    for t in texts:
        if t:
            m = ENHANCED_CODE.search(str(t))
            if m:
                return ".".join(str(int(g)) for g in m.groups())
    return None


#: CMC reports its own bounce status numbers (pipelines/normalizers/cmc.py) and often no
#: SMTP text; the ones whose documented meaning is one RFC 3463 code are grouped under it
#: (3 retransmission timeout, 6 forward error, 7 receiving server error and 99 other are
#: not one code and stay "(no code)").
CMC_STATUS_CODE = {
    "1": "5.1.2",  # unknown host
    "2": "5.1.1",  # unknown user
    "4": "5.7.1",  # rejected by the receiver's policy
    "5": "4.2.2",  # over capacity (mailbox full)
    "8": "5.3.4",  # oversized message
}


def status_code_of(
    provider: str | None, smtp_status: str | None, reason: str | None
) -> tuple[str, str]:
    """(code, basis) of one bounce: the RFC 3463 code the provider reported (in
    smtp_status or the reason text; basis ``reported``), else CMC's status number mapped
    by :data:`CMC_STATUS_CODE` (basis ``cmc status N``), else :data:`NO_CODE`."""
    code = enhanced_status_code(smtp_status, reason)
    if code:
        return code, "reported"
    if provider == "cmc" and smtp_status is not None:
        from ..normalizers.cmc import status_code

        n = status_code(str(smtp_status))
        if n in CMC_STATUS_CODE:
            return CMC_STATUS_CODE[n], f"cmc status {n}"
    return NO_CODE, "none"


def code_meaning(code: str | None) -> str:
    if not code or code == NO_CODE:
        return "no enhanced status code given; see the reasons"
    cls, subject_detail = code.split(".", 1)
    kind = {"2": "success", "4": "transient", "5": "permanent"}[cls]
    return f"{kind}: {CODE_MEANING.get(subject_detail, 'see RFC 3463')}"
