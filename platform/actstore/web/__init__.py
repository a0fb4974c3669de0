"""The read-only feature browser: an ASGI app (pages and a JSON API) over one store.

``actstore serve STORE`` runs it locally; :func:`actstore.web.deployment.browser_app` runs the
same app under Ray Serve. Importing this package imports neither Ray nor the web framework.
"""

__all__: list[str] = []
