"""The exporter conformance kit, run against this plugin, plus its own behaviour."""

from __future__ import annotations

import json

from llbkit.plugins.<REPLACE:kind>_<REPLACE:name>.exporter import <REPLACE:Name>Exporter
from llbkit.sdk.testing import ExporterKit


class Test<REPLACE:Name>Exporter(ExporterKit):
    exporter_class = <REPLACE:Name>Exporter
    valid_attrs = {"dest": "listing.json"}

    def check_export(self, client, response):
        listing = json.loads(client.outputs["listing.json"])
        assert listing == {"linux/amd64": ["dir/data.bin", "hello.txt"]}
        assert response == {"<REPLACE:name>.files": "2"}
