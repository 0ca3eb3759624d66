"""The bench's records on disk, and how its compute is counted.

Records are kept one JSON object a line, keyed by `record["key"]`, each addition an atomic
rewrite. Compute is counted in images through forward + backward, as the engine draws them.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..io.storage import atomic_write_bytes

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per folder there
    fcntl = None


class RecordFile:
    """Finished records, one JSON object a line, keyed by `record["key"]`.

    Each addition rewrites the whole file through a temporary file and a rename, so a crash
    leaves the records before it or after it, never half a line. It first reads back what
    is on disk, under a lock, so that processes sharing a folder (each running other cells:
    `wave bench --methods` on the two cores of one machine, say) keep each other's records.
    """

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        records = (json.loads(line) for line in self.path.read_text().splitlines() if line.strip())
        return {record["key"]: record for record in records}

    @contextlib.contextmanager
    def _locked(self):
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> dict:
        return self.records[key]

    def add(self, record: dict) -> None:
        with self._locked():
            self.records = {**self._read(), **self.records, record["key"]: record}
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records.values())
            atomic_write_bytes(self.path, text.encode())


def images_passed(samples: int, batch_size: int, steps: int) -> int:
    """Images through forward + backward in `steps` steps over `samples` images in batches
    (each epoch's last batch may be smaller), as the training engine draws them."""
    per_epoch = -(-samples // batch_size)
    full, rest = divmod(steps, per_epoch)
    return full * samples + min(rest * batch_size, samples)


def training_compute(provenance: dict) -> int | None:
    """Forward + backward image passes recorded by train_vit / distill, when they are known."""
    config, size = provenance.get("config"), provenance.get("train_size")
    if not isinstance(config, dict) or not size:
        return None
    if config.get("max_steps"):
        return images_passed(size, config["batch_size"], config["max_steps"])
    return config["epochs"] * size
