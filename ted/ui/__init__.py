"""The dashboard: libraries, lessons, versions, jobs, reports and quarantined lessons in a browser.

Served by `ted ui`, and under /ui by `ted-mcp --transport http`; see `ted.ui.app`."""
