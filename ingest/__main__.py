"""python -m ingest PATH [PATH ...]: ingest PDFs (folders recursively) into zhiku's store."""

from offline import enforce_offline

enforce_offline()

import sys  # noqa: E402

from ingest.cli import main  # noqa: E402

sys.exit(main())
