"""Content negotiation: ``$format`` wins over ``Accept``; JSON parameters (metadata level, IEEE754Compatible)."""

from __future__ import annotations

from dataclasses import dataclass

from odata_sync.errors import BadRequest, NotAcceptable


@dataclass
class Format:
    media: str  # application/json | text/plain | application/xml
    metadata: str = "minimal"
    ieee754: bool = False

    @property
    def content_type(self) -> str:
        if self.media != "application/json":
            return f"{self.media};charset=utf-8"
        return (f"application/json;odata.metadata={self.metadata};odata.streaming=true;"
                f"IEEE754Compatible={'true' if self.ieee754 else 'false'};charset=utf-8")


def _media_ranges(header: str) -> list[tuple[str, dict[str, str], float]]:
    ranges = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";") if p.strip()]
        if not pieces:
            continue
        media, params, q = pieces[0].lower(), {}, 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            else:
                params[name] = value
        ranges.append((media, params, q))
    ranges.sort(key=lambda r: -r[2])
    return ranges


def _json(params: dict[str, str]) -> Format:
    metadata = params.get("odata.metadata", params.get("metadata", "minimal")).lower()
    if metadata not in ("minimal", "full", "none"):
        raise NotAcceptable(f"odata.metadata={metadata} is not supported; use minimal, full or none")
    ieee = params.get("ieee754compatible", "false").lower()
    if ieee not in ("true", "false"):
        raise BadRequest("IEEE754Compatible must be true or false")
    return Format("application/json", metadata, ieee == "true")


def negotiate(format_option: str | None, accept: str | None, *, alternatives: tuple[str, ...] = ()) -> Format:
    """Pick the response format. ``alternatives`` are the non-JSON media types this resource can also produce."""
    if format_option is not None:
        pieces = [p.strip() for p in format_option.split(";")]
        media = pieces[0].lower()
        params = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip()
        if media in ("json", "application/json"):
            return _json(params)
        if media in ("xml", "application/xml") and "application/xml" in alternatives:
            return Format("application/xml")
        raise NotAcceptable(f"$format={format_option} is not supported; use json")
    if not accept or not accept.strip():
        return Format(alternatives[0]) if alternatives and alternatives[0] != "application/json" else Format(
            "application/json")
    for media, params, q in _media_ranges(accept):
        if q <= 0:
            continue
        if media in ("application/json", "application/*", "*/*") or media.endswith("+json"):
            if alternatives and alternatives[0] != "application/json" and media != "application/json":
                return Format(alternatives[0])
            return _json(params)
        if media in alternatives:
            return Format(media)
        if media == "text/*" and "text/plain" in alternatives:
            return Format("text/plain")
    raise NotAcceptable(f"None of the requested media types ({accept}) can be produced; use application/json")
