# /// script
# requires-python = ">=3.10"
# dependencies = [
#   "requests<3",
#   "rich>=13.0; python_version >= '3.8'",
#   "pandas[performance]~=2.1",
# ]
# [tool.uv]
# exclude-newer = "2024-01-01T00:00:00Z"
# ///
import requests
from rich.pretty import pprint

resp = requests.get("https://peps.python.org/api/peps.json")
pprint([(k, v["title"]) for k, v in resp.json().items()][:10])
