"""The search index (DESIGN "app/search/"): every attribute of every instance in
Elasticsearch, fed from the change log. Imports only app.dicom, app.query and
app.services.ports."""
