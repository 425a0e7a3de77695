"""The live dashboard page for support leads: CSAT now and over 15 min / 1 h / 24 h against last week, by a
chosen dimension, response and resolution times with SLA breaches, volume, dead letters and firing alerts.

``model`` (pure: query results -> the page's JSON), ``store`` (the ClickHouse reads), ``web`` (the routes,
served by the worker's Faust web server or standalone by ``satpulse dashboard``), ``static/`` (the page;
uPlot comes from ``node_modules`` installed by ``npm ci`` from ``package-lock.json``).
"""

DEFAULT_PORT = 6067  # satpulse dashboard; the worker serves the page on its own web port (worker_web_port, 6066)
