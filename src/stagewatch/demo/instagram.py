"""A fake Instagram Graph API for the publish stage: create a media container, poll its
``status_code`` (``IN_PROGRESS`` then ``FINISHED``, ``ERROR`` or ``EXPIRED``), then ``media_publish``.

The errors look like the real ones: ``InstagramApiError`` carries Graph's ``code``, ``error_subcode``
and ``is_transient``; a container that ends in ``ERROR`` or ``EXPIRED`` raises ``ContainerStatusError``.
"""

from __future__ import annotations

from stagewatch.demo.faults import Fault
from stagewatch.demo.world import Video

GRAPH = "https://graph.facebook.com/v21.0"


class InstagramApiError(Exception):
    """An error answer of the Graph API. ``is_transient`` says whether trying later can help."""

    def __init__(self, message: str, *, code: int, error_subcode: int, is_transient: bool) -> None:
        self.code = code
        self.error_subcode = error_subcode
        self.is_transient = is_transient
        super().__init__(f"{message} (code {code}, error_subcode {error_subcode})")


class ContainerStatusError(Exception):
    """The media container ended in ``ERROR`` (the video is refused: not retryable) or ``EXPIRED``
    (not published within 24 hours: retryable with a new container)."""

    def __init__(self, container_id: str, status_code: str, detail: str) -> None:
        self.container_id = container_id
        self.status_code = status_code
        self.retryable = status_code == "EXPIRED"
        super().__init__(f"media container {container_id} has status_code {status_code}: {detail}")


class GraphApi:
    """The Graph API as one publish attempt of one video sees it. ``calls`` counts the requests made
    (each one is a billable ``instagram_api_call``)."""

    def __init__(self, video: Video, attempt: int) -> None:
        self.video = video
        self.attempt = attempt
        self.calls = 0
        self._polls = 0
        self._ready_after = video.rng.randint(2, 4)

    def create_container(self) -> str:
        """``POST /{ig-user-id}/media`` with ``media_type=REELS`` (or STORIES): the container id."""
        self.calls += 1
        if self.video.fault is Fault.RATE_LIMIT and self.attempt == 1:
            raise InstagramApiError(
                "(#9) Application request limit reached: this account reached its content publishing "
                "limit, try again later",
                code=9,
                error_subcode=2207042,
                is_transient=True,
            )
        return f"1789{self.video.rng.randint(10**11, 10**12 - 1)}"

    def status_code(self, container_id: str) -> str:
        """``GET /{container-id}?fields=status_code``: IN_PROGRESS until the video is processed."""
        self.calls += 1
        self._polls += 1
        if self._polls < self._ready_after:
            return "IN_PROGRESS"
        return self._final_status()

    def media_publish(self, container_id: str) -> str:
        """``POST /{ig-user-id}/media_publish?creation_id=...``: the id of the published media."""
        self.calls += 1
        return f"1796{self.video.rng.randint(10**11, 10**12 - 1)}"

    def _final_status(self) -> str:
        if self.video.fault is Fault.CONTAINER_ERROR:
            return "ERROR"
        if self.video.fault is Fault.CONTAINER_EXPIRED and self.attempt == 1:
            return "EXPIRED"
        return "FINISHED"


def status_detail(status_code: str) -> str:
    """What the Graph API says about a container that did not finish."""
    if status_code == "ERROR":
        return "2207026: the video could not be processed (unsupported codec or aspect ratio)"
    return "the container was not published within 24 hours of its creation"
