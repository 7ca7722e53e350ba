"""Whether a request to a route added beside Gradio's may pass: Gradio's own login, read from its cookie.

The same check Gradio makes for its routes (gradio.routes.App.create_app: get_current_user, login_check).
"""

from __future__ import annotations


def login_configured(app) -> bool:
    return getattr(app, "auth", None) is not None or getattr(app, "auth_dependency", None) is not None


def logged_in(app, request) -> bool:
    """True when no login is configured, or the request carries the cookie of a logged-in user."""
    if not login_configured(app):
        return True
    token = request.cookies.get(f"access-token-{app.cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{app.cookie_id}"
    )
    return app.tokens.get(token) is not None
