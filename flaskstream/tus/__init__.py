"""Resumable uploads over the tus 1.0 protocol at ``/uploads/tus/``.

``protocol.py`` is the pure protocol (headers, metadata, checksums, versions);
``store.py`` keeps each upload's state in PostgreSQL and its bytes in the
shared upload folder, with a lease so that one request at a time writes;
``transfer.py`` takes a request body in, streamed by ``receive.py`` (lease
renewal, interrupted reads) and made durable by ``checkpoint.py`` (fsync, then
the offset); ``janitor.py`` removes expired uploads; ``views.py`` is the
blueprint. Finished uploads become ordinary uploads (the uploads pattern's
``storage``): a row in ``uploads``, served by ``/uploads/<id>``.
"""
