"""The client side of a build, as the engine sees it (``ClientIO``)."""
