"""Access control: the pure claim model (``claims``), signed URLs (``signing``) and
JWT verification (``jwts``). ``flaskstream.auth`` is the HTTP policy built on them."""
