"""Each notification kind at most once per run: claimed in the run record, sent, confirmed.

A claim names its owner (the Lambda request id, which Lambda keeps across an invocation's
retries) and its time. A claim whose owner died before confirming (a crash, or a write whose
answer was lost) is taken back by the owner's own retry, or by anyone once it is older than
ANNOUNCE_LEASE_SECONDS; so an email is never lost to a fault. It can be sent twice when SNS
accepted a publish whose answer was lost (or when recording the sent email failed CONFIRM_ATTEMPTS
times over), and the retry sends it again: SNS cannot deduplicate topics that email.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lambdas.logic.notifications import Notification
from lambdas.logic.ports import Announcements, Notifier, PublishFailed
from lambdas.observability import logger

# Longer than a function's timeout: a claim this old is not being worked on any more.
ANNOUNCE_LEASE_SECONDS = 300
# Recording a sent email is tried this often before the error goes out (and a retry of the
# invocation would send the email again).
CONFIRM_ATTEMPTS = 3


class Announcer:
    """One invocation's announcements (`owner`: its request id)."""

    def __init__(
        self,
        ledger: Announcements,
        notifier: Notifier,
        owner: str,
        clock: Callable[[], float] = time.time,
    ):
        self._ledger = ledger
        self._notifier = notifier
        self._owner = owner
        self._clock = clock

    def announce(self, run_key: str, note: Notification) -> bool:
        """Send `note` unless its kind was announced for the run (or another invocation is
        sending it now). A publish that fails is given back, so a retry sends it. False when
        there was nothing to send."""
        now = int(self._clock())
        claimed = self._ledger.claim_announcement(
            run_key, note.kind, self._owner, now, now - ANNOUNCE_LEASE_SECONDS
        )
        if not claimed:
            return False
        try:
            self._notifier.publish(note.kind, run_key, note.subject, note.message)
        except PublishFailed as error:
            self._ledger.release_announcement(run_key, note.kind)
            logger.warning(
                "Notification not confirmed; released for a retry",
                extra={"kind": note.kind, "maybe_sent": error.maybe_sent, "error": str(error)},
            )
            raise
        for attempt in range(1, CONFIRM_ATTEMPTS + 1):
            try:
                self._ledger.confirm_announcement(run_key, note.kind)
                break
            except Exception:  # noqa: BLE001 - any failure of the write; the last goes out
                logger.warning("Recording a sent email failed", extra={"attempt": attempt})
                if attempt == CONFIRM_ATTEMPTS:
                    raise
        logger.info("Notification sent", extra={"kind": note.kind, "subject": note.subject})
        return True
