"""The request pipeline's stages, called in order by the controllers in ``api/``."""
