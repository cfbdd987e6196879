"""The Azure Functions host of modelrepo: blueprints that only translate, and one bootstrap.

`function_app.py` at the repository root registers the blueprints `http.blueprint` and
`uploads.blueprint`; every rule stays in `modelrepo`.
"""
