"""The pages served to browsers: ``/`` (a host page for the demo's chat widget) and the
widget's script at ``/widget.js``."""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from concierge import __version__, orgs
from concierge.assistants import definitions
from concierge.errors import NotFound
from concierge.gateway.state import concierge
from concierge.web.widget import script

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>
  body {{ margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: #1b1b1f; background: #f6f5f2; }}
  header {{ background: #22313f; color: #fff; padding: 18px 24px; }}
  header strong {{ font-size: 20px; letter-spacing: .02em; }}
  main {{ max-width: 760px; margin: 0 auto; padding: 28px 24px 120px; line-height: 1.55; }}
  h1 {{ font-size: 30px; margin: 0 0 8px; }}
  .lead {{ font-size: 18px; color: #444; }}
  .cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr));
            gap: 14px; margin: 24px 0; }}
  .card {{ background: #fff; border-radius: 12px; padding: 16px; border: 1px solid #e4e1da; }}
  .card h2 {{ font-size: 16px; margin: 0 0 6px; }}
  code, pre {{ background: #ece9e2; border-radius: 6px; padding: 2px 6px; font-size: 13.5px; }}
  pre {{ padding: 12px; overflow-x: auto; }}
  footer {{ color: #666; font-size: 13px; }}
  a {{ color: #1f4fd1; }}
</style>
</head>
<body>
<header><strong>{brand}</strong></header>
<main>
{body}
<footer><p>Served by Concierge {version}. <a href="/docs">API reference</a></p></footer>
</main>
{widget}
</body>
</html>
"""

_DEMO = """<h1>Welcome to {org_name}</h1>
<p class="lead">Outdoor clothing and gear, shipped across Europe. Questions about an order,
returns or sizing? Our assistant answers around the clock from our policies and catalogue, and
hands you to a person whenever you ask.</p>
<div class="cards">
  <div class="card"><h2>Returns</h2>30 days to change your mind on unworn items.</div>
  <div class="card"><h2>Shipping</h2>Free standard shipping on orders over €75.</div>
  <div class="card"><h2>Help</h2>Open the chat in the corner of this page.</div>
</div>
<p>Embed the same assistant on any site with one tag:</p>
<pre>{snippet}</pre>"""

_NONE = """<h1>Concierge is running</h1>
<p class="lead">No chat widget is published for <code>{target}</code>.</p>
<p>Run <code>concierge demo reset</code> to create the demo organisation and its assistant, or
publish one of your assistants with <code>"widget": true</code> and set
<code>home_widget</code> to <code>ORG/ASSISTANT</code>.</p>"""


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    server = concierge(request)
    target = server.settings.home_widget
    found = None
    if target:
        slug, name = target.split("/", 1)

        def read(conn: Any) -> Any:
            try:
                org = orgs.get(conn, slug)
                assistant = definitions.get(conn, org.id, name)
            except NotFound:
                return None
            return (org, assistant) if assistant.config.widget else None

        found = await server.db.read(read)
    if found is None:
        page = _PAGE.format(
            title="Concierge",
            brand="Concierge",
            body=_NONE.format(target=html.escape(target or "(home_widget is empty)")),
            version=__version__,
            widget="",
        )
        return HTMLResponse(page)
    org, assistant = found
    tag = (
        f'<script src="/widget.js" data-org="{html.escape(org.slug)}" '
        f'data-assistant="{html.escape(assistant.name)}" '
        f'data-title="{html.escape(org.name)} support" defer></script>'
    )
    origin = str(request.base_url).rstrip("/")
    snippet = html.escape(
        f'<script src="{origin}/widget.js" data-org="{org.slug}"\n'
        f'        data-assistant="{assistant.name}" defer></script>'
    )
    page = _PAGE.format(
        title=html.escape(org.name),
        brand=html.escape(org.name),
        body=_DEMO.format(org_name=html.escape(org.name), snippet=snippet),
        version=__version__,
        widget=tag,
    )
    return HTMLResponse(page)


@router.get("/widget.js")
async def widget_script() -> Response:
    return Response(
        script(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )
