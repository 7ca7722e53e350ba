"""python -m rag ask "QUESTION": answer from the indexed documents, with sources."""

from offline import enforce_offline

enforce_offline()

import sys  # noqa: E402

from rag.cli import main  # noqa: E402

sys.exit(main())
