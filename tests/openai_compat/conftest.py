"""The official `openai` client against a real ASGI web server and a real worker, on the tiny models."""

from __future__ import annotations

import pytest

from aigc_saas.plugins.models import PluginRecord


@pytest.fixture(scope="session")
def v1_server(web):  # noqa: ANN001, ANN201
    """The session's ASGI web server (`tests.fixtures.stack.Web`): async views and streams are real there."""
    return web


@pytest.fixture
def media(tiny_models, db) -> None:  # noqa: ANN001
    """The image and speech plugins on the tiny models, small and quick by default, as an admin would set them."""
    PluginRecord.objects.filter(name="diffusers-image").update(
        model_id=str(tiny_models["diffusers-image"]), default_params={"steps": 2}
    )
    PluginRecord.objects.filter(name="transformers-speech").update(model_id=str(tiny_models["transformers-speech"]))


@pytest.fixture
def catalogue(db) -> None:  # noqa: ANN001
    from scenarios.core.catalogue import load_catalogue

    load_catalogue()


@pytest.fixture
def client(v1_server, worker, tenant_key):  # noqa: ANN001, ANN201
    from openai import OpenAI

    return OpenAI(base_url=f"{v1_server.url}/v1", api_key=tenant_key[1], max_retries=0, timeout=120)
