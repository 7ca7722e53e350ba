"""All torch work runs on the one model thread: on a CPU a torch op on a second thread halves decode speed
for the rest of the process (docs/benchmarks.md, section 5)."""

import threading

from models.embedder import Embedder
from models.streaming import WORKER_NAME, on_worker


def test_embeddings_run_on_the_model_thread():
    embedder = Embedder()
    encode = embedder._model.encode
    seen = []

    def recording(*args, **kwargs):  # the real encode, noting the thread it runs on
        seen.append(threading.current_thread().name)
        return encode(*args, **kwargs)

    embedder._model.encode = recording
    vectors = embedder.embed_documents(["zebras cross the Mara River", "长城全长两万一千多公里"])
    assert len(vectors) == 2 and len(vectors[0]) == embedder.dimension
    embedder.embed_query("zebra")
    assert seen and all(name.startswith(WORKER_NAME) for name in seen), seen


def test_on_worker_runs_in_place_when_already_on_the_model_thread():
    names = on_worker(lambda: (threading.current_thread().name, on_worker(lambda: threading.current_thread().name)))
    assert names[0].startswith(WORKER_NAME) and names[0] == names[1]
