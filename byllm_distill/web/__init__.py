"""Small local web tools built on the standard library's http.server (rating.py)."""
