"""Views: one module per area; each view is ``async def view(ctx, **path_params) -> Response | Stream``."""
