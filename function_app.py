"""The Azure Functions entry point (Python v2 model): create the app, register the blueprints."""

import azure.functions as func

from functions_azure import events, http, maintenance, uploads

app = func.FunctionApp()
app.register_functions(http.blueprint)
app.register_functions(uploads.blueprint)
app.register_functions(maintenance.blueprint)
app.register_functions(events.blueprint)
