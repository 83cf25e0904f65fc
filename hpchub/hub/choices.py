"""The user's choice at the spawn form and in spawn links, checked before anything is submitted.

A refused choice (the form's POST or a link's ``opt-`` arguments) is shown again on the form with
its messages (``ChoicesRefused``, HTTP 400); a link's accepted choice is shown on the form, prefilled,
with what it will charge (``LinkShown``, HTTP 200): following a link never starts a server. What the
next form render shows is kept per hub user (``ShownChoices``). The spawner passes in how it finds
a profile and resolves a choice, so this module needs no spawner and can be tested alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tornado import web

from ..core.config import Profile
from ..core.options import JobRequest, OptionsError
from .form import LinkSummary, Preselection, charge_text, options_from_query, read_form

ProfileFor = Callable[[dict[str, str]], Awaitable[Profile]]  # 400: not available to this user
Resolve = Callable[[Profile, dict[str, str]], Awaitable[JobRequest]]  # OptionsError: refused


class ChoicesRefused(web.HTTPError):
    """The spawn form's or a link's choices, refused before anything is submitted (HTTP 400)."""

    # JupyterHub's banner over the form shows this; the messages are next to their fields.
    jupyterhub_message = "Nothing was submitted: some choices were not accepted (see below)."

    def __init__(self, error: OptionsError):
        super().__init__(400, "Invalid options: %s", error)
        self.problems = error.problems


class LinkShown(web.HTTPError):
    """A spawn link's choices, all accepted: raised from options_from_query so that JupyterHub shows
    the form (HTTP 200) prefilled with them and what they will charge, instead of starting a server
    for whoever followed the link. The form's Start button (a POST) starts it."""

    jupyterhub_message = ""  # no error banner: the form's own summary says what happens

    def __init__(self) -> None:
        super().__init__(200, "a spawn link's choices are shown on the form for the user to start")


class _LinkShownIsNoFailure(logging.Filter):
    """JupyterHub logs any exception of options_from_query as a failed spawn with its traceback; a
    LinkShown is how a valid link gets its form: one info line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], LinkShown):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.msg, record.args = "spawn link: its choices are shown on the form; nothing starts before Start", ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_link_forms(hub_log: logging.Logger | logging.LoggerAdapter) -> None:
    """The hub's log says a shown link in one info line (see _LinkShownIsNoFailure)."""
    logger = hub_log.logger if isinstance(hub_log, logging.LoggerAdapter) else hub_log
    if not any(isinstance(existing, _LinkShownIsNoFailure) for existing in logger.filters):
        logger.addFilter(_LinkShownIsNoFailure())


# Hub user name -> (the choice last refused at the spawn form or in a link, or a link's accepted
# choice, when): shown, with its messages or charge, by the next form render. Kept here, not on the
# spawner, because JupyterHub renders the form again after a refused POST with the user's default
# spawner, even for a named server.
_shown_choices: dict[str, tuple[Preselection, float]] = {}
SHOWN_CHOICE_TTL = 60.0  # seconds: a choice nobody looked at is not shown on a later visit


def preselection(user_name: str, remembered: object) -> Preselection:
    """The choice just refused (with its messages) or a link's, else ``remembered`` (the server's
    last user_options)."""
    shown = _shown_choices.pop(user_name, None)
    if shown is not None and time.monotonic() - shown[1] < SHOWN_CHOICE_TTL:
        return shown[0]
    return Preselection.from_options(remembered if isinstance(remembered, dict) else {})


async def form_choice(user_name: str, formdata: dict[str, list[str]], profile_for: ProfileFor,
                      resolve: Resolve) -> dict[str, str]:
    """The form's choice as canonical user_options, checked now: a refused one is shown again on
    the form with its messages, and nothing is submitted."""
    submitted = read_form(formdata)
    await checked(user_name, submitted.options, submitted.problems, profile_for, resolve,
                  lambda problems: Preselection.from_form(submitted, problems))
    return submitted.options


async def link_choice(user_name: str, query_data: dict[str, list[str]], profile_for: ProfileFor,
                      resolve: Resolve) -> NoReturn:
    """A link's ``opt-`` arguments (``/hub/spawn?opt-profile=small&opt-cores=2``) never start a
    server by themselves: whoever follows a link would be charged for it. They are checked like
    the form's and shown on the form, prefilled, with what they will charge (LinkShown, HTTP 200)
    or with the messages of what was refused (ChoicesRefused, HTTP 400)."""
    try:
        options = options_from_query(query_data)
    except OptionsError as error:
        options, problems = {name: values[0] for name, values in query_data.items() if values}, error.problems
    else:
        problems = {}
    request = await checked(user_name, options, problems, profile_for, resolve,
                            lambda found: Preselection.from_options(options, found))
    link = LinkSummary(request.profile.name, request.cluster_name, charge_text(request))
    _shown_choices[user_name] = (Preselection.from_options(options, link=link), time.monotonic())
    raise LinkShown()


async def checked(user_name: str, options: dict[str, str], problems: dict[str, str], profile_for: ProfileFor,
                  resolve: Resolve, shown: Callable[[dict[str, str]], Preselection]) -> JobRequest:
    """The job ``options`` make; ChoicesRefused (the form shows ``shown(problems)``) if any is refused."""
    problems = dict(problems)
    request: JobRequest | None = None
    try:
        profile: Profile | None = await profile_for(options)
    except web.HTTPError as error:
        if error.status_code != 400:
            raise
        profile, problems["profile"] = None, error.log_message or "not available"
    if profile is not None:
        try:
            request = await resolve(profile, {k: v for k, v in options.items() if k not in problems})
        except OptionsError as error:
            problems.update(error.problems)
    if not problems and request is not None:
        return request
    _shown_choices[user_name] = (shown(problems), time.monotonic())
    raise ChoicesRefused(OptionsError(problems))
