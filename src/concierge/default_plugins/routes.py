"""The built-in HTTP surface, registered through the ``register_routes`` hook like any
plugin's: the OpenAI-compatible API, knowledge and vector stores, assistants and conversations,
complaints, governance, administration, health, the page at ``/`` and the chat widget."""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge.hookspecs import hookimpl

if TYPE_CHECKING:
    from concierge.app import Concierge
    from concierge.gateway.routes import Routes


@hookimpl
def register_routes(routes: Routes, concierge: Concierge) -> None:
    """Every route Concierge serves out of the box."""
    # Imported here: the command line registers every plugin and needs none of this.
    from concierge.gateway import (
        admin,
        assistants,
        channels,
        complaints,
        conversations,
        files,
        governance,
        health,
        inbox,
        knowledge,
        openai,
        vector_stores,
    )
    from concierge.web import pages
    from concierge.web.widget import widget_app

    routes.include(openai.router, body_models=openai.BODY_MODELS)
    routes.include(knowledge.router, body_models=knowledge.BODY_MODELS)
    routes.include(files.router)
    routes.include(vector_stores.router)
    routes.include(assistants.router, body_models=assistants.BODY_MODELS)
    routes.include(conversations.router, body_models=conversations.BODY_MODELS)
    routes.include(channels.router, body_models=channels.BODY_MODELS)
    routes.include(inbox.router, body_models=inbox.BODY_MODELS)
    routes.include(complaints.router, body_models=complaints.BODY_MODELS)
    routes.include(governance.router, body_models=governance.BODY_MODELS)
    routes.include(governance.admin)
    routes.include(admin.router)
    routes.include(health.router)
    routes.include(pages.router)
    routes.mount("/widget/v1", widget_app(concierge))
