"""The fabric's own dashboard: pools, the queue and cost, served by `fabric up` (server.py) and
written to a file by `fabric cost --html` (page.py); the numbers come from the SDK (data.py), the
charts from Plotly's offline bundle (charts.py)."""
