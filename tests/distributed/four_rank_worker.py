"""msrun worker (4 ranks): the two 4-rank checks in one launch -- placement_worker4.py (expert placement across
four ranks; argv[1] its run directory), then dispatch_worker.py (dispatchers and reducers on sub-groups) on the
same cluster. Each rank prints one ``RESULT {"placement": ..., "dispatch": ...}`` line."""
import json
import sys

from tests.distributed import dispatch_worker, placement_worker4


def main():
    res = {"placement": placement_worker4.results(sys.argv[1])}       # brings the cluster up (setup_parallel)
    res["dispatch"] = dispatch_worker.results(inited=True)
    print("RESULT " + json.dumps(res, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
