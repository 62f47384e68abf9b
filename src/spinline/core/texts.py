"""Message keys for text the server builds for people, so the console can show it in the reader's language.

The server keeps writing English (API clients, logs, reports read it); beside each such string the API
also gives a key and its parameters. ``TEMPLATES`` is the English catalogue: the server renders its
English text from it, and the console's ``en`` catalogue carries the same entries (a test compares them),
so the two cannot drift. Placeholders are ``{name}`` in both Python ``str.format`` and vue-i18n; every
parameter is a string already formatted (numbers rounded as the English text shows them), so both sides
print the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: key -> English template. Keys are the console catalogue's paths (``server.`` prefix there).
TEMPLATES: dict[str, str] = {
    "wo.title.fault_on_asset": "{fault} on {asset}",
    "health.explain": "health {value}/100 ({status}); driven by {driver}; penalties: {penalties}",
    "health.explain_no_penalties": "health {value}/100 ({status}); driven by {driver}; penalties: none",
    "health.envelope_line": "dominant envelope line {feature} ({defect}) {ratio}x the background",
    "health.envelope_line_others": "dominant envelope line {feature} ({defect}) {ratio}x the background ({others})",
    "health.velocity": "velocity RMS {velocity} mm/s",
    "health.velocity_zone": "velocity RMS {velocity} mm/s, ISO 20816 zone {zone}",
    "alarm.edge_event": "{rule} on {asset} (edge {edge}, model {model})",
    "alarm.edge_event_fault": "{rule} on {asset} (edge {edge}, model {model}): {fault}",
    "alarm.rule_value": "{rule}: {feature} = {value} on {asset}",
    "carbon.opp.line_best": "bring {line} to its best-demonstrated {best} kWh/kg",
    "carbon.opp.idle_off": "switch off production machines while stopped",
    "carbon.opp.air_leaks": "repair compressed-air leaks",
    "carbon.opp.hvac_share": "HVAC at {share} of mill energy, above the {top} top of the usual band",
    "diag.fault_confidence": "{fault} (confidence {confidence})",
    # Diagnosis evidence ("  - " lines under the verdict in a work order's description). The envelope lines
    # most specific first: parsing takes the first template that reads the text (a line's name could hold "(Hz)").
    "diag.ev.envelope_hz_baseline": "envelope line at {line} ({hz} Hz) is {ratio}x the local background "
                                    "(baseline {baseline}x); next strongest {next} {next_ratio}x",
    "diag.ev.envelope_hz": "envelope line at {line} ({hz} Hz) is {ratio}x the local background; "
                           "next strongest {next} {next_ratio}x",
    "diag.ev.envelope_baseline": "envelope line at {line} is {ratio}x the local background (baseline {baseline}x); "
                                 "next strongest {next} {next_ratio}x",
    "diag.ev.envelope": "envelope line at {line} is {ratio}x the local background; next strongest {next} {next_ratio}x",
    "diag.ev.kurtosis": "kurtosis {kurtosis} (impacts push it above 3)",
    "diag.ev.shaft_component": "{order} shaft component {value} mm/s, {growth}x its baseline {baseline} mm/s",
    "diag.ev.shaft_slower": "shaft {pct} % slower than nominal",
    "diag.ev.none": "no bearing line or shaft component stands out",
    # Work-order history written by the system (a comment a person typed has no key).
    "wo.comment.assigned": "assigned to {assignee}",
    "wo.comment.verified": "health index recovered to {health}",
    "wo.comment.diagnosis": "diagnosis: {fault_from} -> {fault}",
    "wo.comment.cloud_diagnosis": "cloud diagnosis of snapshot {snapshot} from {edge}: {fault} (confidence "
                                  "{confidence}), the edge said {edge_fault} (confidence {edge_confidence})",
    # Weekly maintenance plan.
    "plan.title.inspect_predicted": "inspect {asset} (predicted)",
    "plan.reason.overdue": "overdue",
    "plan.reason.due_this_week": "due this week",
    # Monthly maintenance report lines (``faults`` and ``assumptions`` are ", "-joined "<fault> <figure>" lists).
    "report.maint.title": "Maintenance report {month}",
    "report.maint.faults": "faults found: {count} ({faults})",
    "report.maint.faults_none": "faults found: {count} (none)",
    "report.maint.orders": "resolved {resolved}, verified {verified}, overdue {overdue}",
    "report.maint.time_to_fix": "time to fix: median {median} h, mean {mean} h",
    "report.maint.downtime": "downtime avoided: {hours} h (assumed unplanned downtime per fault: {assumptions})",
    # Error details of the API (key ``error.<code>``; the console shows them per ``code`` with ``params``).
    "error.span_too_large": "the span is {days} days; {what} cover at most {limit} days per request",
    "error.span_too_large_resolution": "the span is {days} days; resolution {resolution} covers at most {limit} days "
                                       "per request (use auto or 1h for longer spans)",
    "error.empty_span": "end must be after start",
    "error.not_found": "{kind} {id} not found",
    "error.not_found_kind": "{kind} not found",
    "error.not_found_of_machine": "{kind} {id} of machine {machine} not found",
    "error.not_found_kind_of_machine": "{kind} of machine {machine} not found",
    "error.record_exists": "{id} already exists",
    "error.transition_refused": "{kind} {id}: cannot {action} when {state}",
    "error.verify_refused": "work order {id}: cannot verify when resolved with health {health} < {needed}",
    # One invalid field of a request (``invalid_request``), by pydantic error type: "<loc>: <pydantic's message>".
    "error.field.missing": "{field}: Field required",
    "error.field.string_too_long": "{field}: String should have at most {max_length} characters",
    "error.field.string_too_short": "{field}: String should have at least {min_length} characters",
    "error.field.greater_than": "{field}: Input should be greater than {gt}",
    "error.field.greater_than_equal": "{field}: Input should be greater than or equal to {ge}",
    "error.field.less_than": "{field}: Input should be less than {lt}",
    "error.field.less_than_equal": "{field}: Input should be less than or equal to {le}",
    "error.field.string_type": "{field}: Input should be a valid string",
    "error.field.int_parsing": "{field}: Input should be a valid integer, unable to parse string as an integer",
    "error.field.float_parsing": "{field}: Input should be a valid number, unable to parse string as a number",
    "error.field.bool_parsing": "{field}: Input should be a valid boolean, unable to interpret input",
    "error.field.literal_error": "{field}: Input should be {expected}",
    "error.field.enum": "{field}: Input should be {expected}",
    "error.field.too_long": "{field}: List should have at most {max_length} items after validation, "
                            "not {actual_length}",
    "error.field.datetime_parsing": "{field}: Input should be a valid datetime, {error}",
    "error.field.datetime_from_date_parsing": "{field}: Input should be a valid datetime or date, {error}",
    "error.field.invalid": "{field}: {msg}",
    "error.too_many_concurrent_requests": "at most {limit} requests of one user run at once; wait for one to finish",
}


def render(key: str, params: Mapping[str, str]) -> str:
    """The English text of ``key``; KeyError names a missing key or parameter (a programming error)."""
    return TEMPLATES[key].format_map(dict(params))


@dataclass(frozen=True, slots=True)
class Text:
    """A message key with its parameters; ``en`` is the English the server shows."""

    key: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def en(self) -> str:
        return render(self.key, self.params)


def keyed(key: str, params: Mapping[str, str], text: str) -> Text | None:
    """``Text(key, params)`` when it renders to ``text`` exactly, else None.

    Used where the English was stored before keys existed, or may have been typed by a person (a work
    order's title): a key is only given when it says the same thing as the text, so the console never
    shows a translation of something the text does not say (it falls back to the text).
    """
    try:
        t = Text(key, {k: str(v) for k, v in params.items()})
        return t if t.en == text else None
    except (KeyError, IndexError, ValueError):
        return None


def parse_any(keys: tuple[str, ...], text: str) -> Text | None:
    """The first of ``keys`` whose template ``text`` was built from (``parse``), else None."""
    for k in keys:
        if (t := parse(k, text)) is not None:
            return t
    return None


def parse_joined(keys: tuple[str, ...], text: str, sep: str = "; ") -> list[Text] | None:
    """``text`` as ``sep``-joined parts each built from one of ``keys``, or None when it is not.

    A part may itself contain ``sep`` (a health explanation does), so consecutive pieces are tried
    together, fewest first; texts are a few parts long, the search stays tiny.
    """
    pieces = text.split(sep)

    def from_(i: int) -> list[Text] | None:
        if i == len(pieces):
            return []
        for j in range(i + 1, len(pieces) + 1):  # shortest first: a parameter rarely holds the separator
            if (t := parse_any(keys, sep.join(pieces[i:j]))) is not None and (rest := from_(j)) is not None:
                return [t, *rest]
        return None

    return from_(0) if text else None


def parse(key: str, text: str) -> Text | None:
    """Recover ``Text(key, params)`` from English built by ``render(key, ...)``, or None when it was not.

    For text stored before keys existed (alarm messages in the database); the match must render back
    to ``text`` exactly.
    """
    tpl = TEMPLATES.get(key)
    if tpl is None:
        return None
    found = match(tpl, text)
    return keyed(key, found, text) if found is not None else None


def match(tpl: str, text: str, *, empty: bool = False) -> dict[str, str] | None:
    """The parameters that make ``tpl`` (``{name}`` placeholders) read ``text``, or None when none do.

    ``empty``: a parameter may be the empty string (an id that is not always given). The caller checks
    that the parameters render back to ``text`` where that matters (``keyed``).
    """
    import re

    names: list[str] = []
    any_ = ".*?" if empty else ".+?"

    def group(m: re.Match[str]) -> str:
        names.append(m.group(1))
        return f"(?P<{m.group(1)}>{any_})" if names.count(m.group(1)) == 1 else f"(?P={m.group(1)})"

    pattern = re.sub(r"\\\{(\w+)\\\}", group, re.escape(tpl))
    m = re.fullmatch(pattern, text, flags=re.DOTALL)
    return m.groupdict() if m else None
