"""Request bodies schemathesis cannot make by itself (loaded through
schemathesis.toml)."""

import schemathesis
from hypothesis import strategies as st

# A tus chunk (PATCH /v1/uploads/{id}) is raw bytes.
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=4096))
