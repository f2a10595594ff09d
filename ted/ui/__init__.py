"""The dashboard: libraries, lessons, versions, jobs, reports and held lessons in a browser.

Served by `ted ui`, and under /ui by `ted-mcp --transport http`; see `ted.ui.app`."""
