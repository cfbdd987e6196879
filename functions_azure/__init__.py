"""The Azure Functions host of modelrepo: blueprints that only translate, and one bootstrap.

`function_app.py` at the repository root registers the blueprints `http.blueprint`,
`uploads.blueprint` and `maintenance.blueprint`; every rule stays in `modelrepo`.
"""
