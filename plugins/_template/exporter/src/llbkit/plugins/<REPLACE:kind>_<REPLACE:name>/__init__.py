"""``--output type=<REPLACE:name>``: a JSON listing of a build result's files, on the client."""
