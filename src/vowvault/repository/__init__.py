"""The data plane: a backup as it is stored, below the engine and free of the catalog.

Vocabulary:

- a *location* names a backup's objects (``<org>/<policy>/<backup>/<kind>``, ``layout``);
- a *copy* is one storage target holding a backup (``Copy``: its URL, its backend, whether
  it is required, the tier its data goes to);
- the *manifest* (``manifest.Manifest``) says what a backup holds; the *key object*
  (``keyobject.KeyObject``) carries its wrapped data key;
- the *writer* (``writer``) puts one sealed object on every copy at once; the *pipeline*
  (``pipeline``) runs snapshot → compress → encrypt → upload as concurrent stages;
- the *reader* (``reader.BackupReader``) is handed every copy of a backup and reads its
  objects back, checked frame by frame, as streams or byte ranges; the *tree reader*
  (``tree.TreeReader``) walks a file tree and resolves the files it references in other
  backups; ``verify`` proves one copy.

Everything here takes plain values (ids, the data key, the copies' backends) and returns
plain values: it never sees a catalog session, a model or the engine's context. It knows
the codec, storage and the domain's vocabulary.
"""

from vowvault.repository.copies import Copy
from vowvault.repository.layout import BackupLocation

__all__ = ["BackupLocation", "Copy"]
