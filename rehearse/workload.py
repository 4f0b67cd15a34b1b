"""The sample app's workload, sent by a producer that connects as the web app would.

Run as a script in its own interpreter (the app's code on PYTHONPATH, CELERY_FLEET_BROKER_URL the
URL the stateful stack's outputs describe, SSL_CERT_FILE trusting the broker's CA). Prints one JSON
line: what was sent and the outcomes the app's own code predicts for it.

argv: app_module requests fetches
"""

from __future__ import annotations

import importlib
import json
import sys
from collections import Counter


def main() -> int:
    app_module, requests, fetches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app = importlib.import_module(app_module).app
    tasks = importlib.import_module(f"{app_module.rsplit('.', 1)[0]}.tasks")
    succeeded: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    retried: Counter[str] = Counter()
    handle, item, fetch = (
        f"{tasks.__name__}.{name}" for name in ("handle_request", "process_item", "fetch_external")
    )
    for number in range(requests):
        n_items = tasks.MIN_ITEMS + number % (tasks.MAX_ITEMS - tasks.MIN_ITEMS + 1)
        app.send_task(handle, kwargs={"request_id": f"rehearsal-{number}", "n_items": n_items})
        succeeded[handle] += 1
        succeeded[item] += n_items
    for number in range(fetches):
        url = f"https://service.example/items/{number}"
        app.send_task(fetch, kwargs={"url": url})
        succeeded[fetch] += 1
        retried[fetch] += tasks.failures_before_success(url)
    # A request outside the app's limits: it fails, and its failure record must say why.
    app.send_task(handle, kwargs={"request_id": "rehearsal-bad", "n_items": tasks.MIN_ITEMS - 1})
    failed[handle] += 1
    print(json.dumps({"succeeded": succeeded, "failed": failed, "retried": retried}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
