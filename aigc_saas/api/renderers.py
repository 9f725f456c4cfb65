import json

from rest_framework.renderers import BaseRenderer


class PassthroughRenderer(BaseRenderer):
    """Lets file and event-stream views answer any Accept header; error dicts still render as JSON."""

    media_type = "*/*"
    format = "raw"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # noqa: ANN001, ANN201
        if isinstance(data, dict | list):
            return json.dumps(data).encode()
        return data


class EventStreamRenderer(PassthroughRenderer):
    media_type = "text/event-stream"
    format = "event-stream"
