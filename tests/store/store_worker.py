"""A separate process that writes audit records, for the restart and two-process tests.

    python store_worker.py URL SPOOL_DIR TAG COUNT [--exit-without-close] [--wait-spooled]

Writes COUNT calls with service id TAG. By default closes the store (flushing it). With
--exit-without-close it returns from main without closing (the atexit hook must flush). With
--wait-spooled it flushes, prints "spooled", and then sleeps until killed (the database is down).
"""
import sys
import time

from cds.store import Store
from store_support import AUDIT_KEY, call_record


def main() -> None:
    url, spool_dir, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    flags = set(sys.argv[5:])
    store = Store.open(url, spool_dir=spool_dir, audit_key=AUDIT_KEY, retry_interval=0.2, db_timeout=1.0)
    print("opened", flush=True)
    for i in range(count):
        store.record_call(call_record(f"pat-{tag}-{i}", service_id=tag))
    if "--wait-spooled" in flags:
        store.flush(timeout=60)
        print("spooled", flush=True)
        while True:
            time.sleep(1)
    if "--exit-without-close" in flags:
        return
    store.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
